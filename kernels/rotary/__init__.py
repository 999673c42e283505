"""Rotary position embedding (transformers' ``apply_rotary_pos_emb``, partial rotary included)."""
from dispatch import Implementation, register
from kernels.rotary.api import apply_rotary_pos_emb
from kernels.rotary.naive import rotary_reference
from kernels.rotary.torch_impl import rotary_torch

register(
    Implementation(
        op="rotary",
        name="reference",
        fn=rotary_reference,
        device_types=("cpu", "cuda", "npu"),
        priority=0,
        selectable=False,
        description="per-pair rotation formula, one pair of dims at a time (float64-capable, slow)",
    )
)
register(
    Implementation(
        op="rotary",
        name="torch",
        fn=rotary_torch,
        device_types=("cpu", "cuda", "npu"),
        priority=10,
        description="x * cos + rotate_half(x) * sin over the first R dims, the rest passed through",
    )
)

__all__ = ["apply_rotary_pos_emb"]
