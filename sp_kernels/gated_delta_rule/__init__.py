"""Gated delta rule (the Gated DeltaNet token mixer): ``chunk_gated_delta_rule``."""
from dispatch import Implementation, prefer, register
from sp_kernels._lazy import lazy
from sp_kernels._triton import with_backend
from sp_kernels.gated_delta_rule.api import chunk_gated_delta_rule
from sp_kernels.gated_delta_rule.chunk import chunk_gated_delta_rule_torch
from sp_kernels.gated_delta_rule.naive import naive_recurrent_gated_delta_rule

# the order of preference among the implementations that can run a call (reference: only when forced)
prefer("chunk_gated_delta_rule", "mindspeed", "fla_fused_recurrent", "fla", "triton", "torch", "reference")

register(
    Implementation(
        op="chunk_gated_delta_rule",
        name="reference",
        fn=naive_recurrent_gated_delta_rule,
        device_types=("cpu", "cuda", "npu"),
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
        description="chunked torch (any device)",
    )
)


register(
    Implementation(
        op="chunk_gated_delta_rule",
        name="triton",
        fn=lazy("sp_kernels.gated_delta_rule.fused_recurrent_triton", "fused_recurrent_gated_delta_rule_triton"),
        device_types=("cuda", "npu"),
        packages=("triton",),
        supports=with_backend(lazy("sp_kernels.gated_delta_rule.fused_recurrent_triton", "supports")),
        launches=lazy("sp_kernels.gated_delta_rule.fused_recurrent_triton", "launches"),
        description="our portable Triton fused recurrent delta rule (forward only, T <= 64: decode)",
    )
)

# Third-party kernels (issue 6): every argument passed by keyword, availability probed lazily.
register(
    Implementation(
        op="chunk_gated_delta_rule",
        name="fla",
        fn=lazy("sp_kernels.gated_delta_rule.fla", "chunk_gated_delta_rule_fla"),
        device_types=("cuda", "npu"),
        packages=("fla.ops.gated_delta_rule",),
        supports=lazy("sp_kernels._fla", "supports_fla"),
        description="flash-linear-attention's chunked gated delta rule (Triton; Triton-Ascend backend on NPU)",
    )
)
register(
    Implementation(
        op="chunk_gated_delta_rule",
        name="fla_fused_recurrent",
        fn=lazy("sp_kernels.gated_delta_rule.fla", "fused_recurrent_gated_delta_rule_fla"),
        device_types=("cuda", "npu"),
        packages=("fla.ops.gated_delta_rule",),
        supports=lazy("sp_kernels.gated_delta_rule.fla", "supports_fused_recurrent"),
        description="flash-linear-attention's fused recurrent kernel: decoding (no backward, T <= 64)",
    )
)
register(
    Implementation(
        op="chunk_gated_delta_rule",
        name="mindspeed",
        fn=lazy("sp_kernels.gated_delta_rule.mindspeed", "chunk_gated_delta_rule_mindspeed"),
        device_types=("npu",),
        packages=("torch_npu", "mindspeed.core.ssm.npu_chunk_gated_delta_rule"),
        supports=lazy("sp_kernels.gated_delta_rule.mindspeed", "supports_mindspeed"),
        description="MindSpeed's Triton gated delta rule (Ascend; bf16/fp16; initial states via our torch path)",
    )
)

__all__ = ["chunk_gated_delta_rule"]
