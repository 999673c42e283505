"""Registration of our Triton kernels for the op (``causal_conv1d``): the tile plan (pure) is imported, the launcher
(which imports triton, probed lazily) only on first call.

``triton_kernels.py`` (the ``@triton.jit`` functions), ``triton_plan.py`` (tiles -> the launches the registry
checks), ``triton_launch.py`` (runs exactly those), ``triton_specs.py`` (what the compile check compiles)."""
from sp_kernels.dispatch import Implementation, register
from sp_kernels._lazy import lazy
from sp_kernels._triton import with_backend
from sp_kernels.kernels.causal_conv1d import triton_plan

register(
    Implementation(
        op="causal_conv1d",
        name="triton",
        fn=lazy("sp_kernels.kernels.causal_conv1d.triton_launch", "causal_conv1d_triton"),
        device_types=("cuda", "npu"),
        packages=("triton",),
        supports=with_backend(triton_plan.supports),
        launches=triton_plan.launches,
        description="our portable Triton causal conv (triton / triton-ascend; tiles from the device profile)",
    )
)
