"""Registration of our Triton kernel for the op (``gated_delta_rule``): the kernels live in a module that imports
triton, which is probed lazily, so this file points at it without importing it."""
from dispatch import Implementation, register
from sp_kernels._lazy import lazy
from sp_kernels._triton import with_backend

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
