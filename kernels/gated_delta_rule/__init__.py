"""Gated delta rule (the Gated DeltaNet token mixer): ``chunk_gated_delta_rule``."""
from dispatch import Implementation, register
from kernels.gated_delta_rule.api import chunk_gated_delta_rule
from kernels.gated_delta_rule.chunk import chunk_gated_delta_rule_torch
from kernels.gated_delta_rule.naive import naive_recurrent_gated_delta_rule

register(
    Implementation(
        op="chunk_gated_delta_rule",
        name="reference",
        fn=naive_recurrent_gated_delta_rule,
        device_types=("cpu", "cuda", "npu"),
        priority=0,
        selectable=False,
        description="per-token recurrence (float64-capable reference)",
    )
)
register(
    Implementation(
        op="chunk_gated_delta_rule",
        name="torch",
        fn=chunk_gated_delta_rule_torch,
        device_types=("cpu", "cuda", "npu"),
        priority=10,
        description="chunked torch (any device)",
    )
)

__all__ = ["chunk_gated_delta_rule"]
