"""Rotary position embedding (transformers' ``apply_rotary_pos_emb``, partial rotary included)."""
from dispatch import Implementation, prefer, register
from sp_kernels._lazy import lazy
from sp_kernels._triton import with_backend
from sp_kernels.rotary.api import apply_rotary_pos_emb
from sp_kernels.rotary.naive import rotary_reference
from sp_kernels.rotary.torch_impl import rotary_torch

# the order of preference among the implementations that can run a call (reference: only when forced)
prefer("rotary", "torch_npu.npu_rotary_mul", "triton", "fla", "torch", "reference")

register(
    Implementation(
        op="rotary",
        name="reference",
        fn=rotary_reference,
        device_types=("cpu", "cuda", "npu"),
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
        description="x * cos + rotate_half(x) * sin over the first R dims, the rest passed through",
    )
)


register(
    Implementation(
        op="rotary",
        name="triton",
        fn=lazy("sp_kernels.rotary.triton_impl", "rotary_triton"),
        device_types=("cuda", "npu"),
        packages=("triton",),
        supports=with_backend(lazy("sp_kernels.rotary.triton_impl", "supports")),
        launches=lazy("sp_kernels.rotary.triton_impl", "launches"),
        description="our portable Triton rotary (partial rotary, grouped KV heads; triton / triton-ascend)",
    )
)

register(
    Implementation(
        op="rotary",
        name="fla",
        fn=lazy("sp_kernels.rotary.fla", "apply_rotary_pos_emb_fla"),
        device_types=("cuda", "npu"),
        packages=("fla.modules.rotary",),
        supports=lazy("sp_kernels._fla", "supports_fla"),
        description="flash-linear-attention's rotary (half-width cos/sin shared by the batch; else torch, warned)",
    )
)
register(
    Implementation(
        op="rotary",
        name="torch_npu.npu_rotary_mul",
        fn=lazy("sp_kernels.rotary.npu", "apply_rotary_pos_emb_npu"),
        device_types=("npu",),
        packages=("torch_npu",),
        supports=lazy("sp_kernels.rotary.npu", "supports_npu_rotary"),
        description="torch_npu.npu_rotary_mul on the rotary part, the tail passed through",
    )
)

__all__ = ["apply_rotary_pos_emb"]
