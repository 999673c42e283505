"""Registration of our Triton kernel for the op (``chunk_gated_delta_rule``: the fused recurrent form, forward only):
the tile plan (pure) is imported, the launcher (which imports triton, probed lazily) only on first call.

``triton_kernels.py`` (the ``@triton.jit`` function), ``triton_plan.py`` (tiles -> the launch the registry checks),
``triton_launch.py`` (runs exactly that), ``triton_specs.py`` (what the compile check compiles)."""
from sp_kernels.dispatch import Implementation, register
from sp_kernels._lazy import lazy
from sp_kernels._triton import with_backend
from sp_kernels.kernels.chunk_gated_delta_rule import triton_plan

register(
    Implementation(
        op="chunk_gated_delta_rule",
        name="triton",
        fn=lazy("sp_kernels.kernels.chunk_gated_delta_rule.triton_launch", "fused_recurrent_gated_delta_rule_triton"),
        device_types=("cuda", "npu"),
        packages=("triton",),
        supports=with_backend(triton_plan.supports),
        launches=triton_plan.launches,
        description="our portable Triton fused recurrent delta rule (forward only, T <= 64: decode)",
    )
)
