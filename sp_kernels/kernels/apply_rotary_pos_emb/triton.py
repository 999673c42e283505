"""Registration of our Triton kernels for the op (``rotary``): the tile plan (pure) is imported, the launcher (which
imports triton, probed lazily) only on first call.

``triton_kernels.py`` (the ``@triton.jit`` functions), ``triton_plan.py`` (tiles -> the launches the registry
checks), ``triton_launch.py`` (runs exactly those), ``triton_specs.py`` (what the compile check compiles)."""
from sp_kernels.dispatch import Implementation, register
from sp_kernels._lazy import lazy
from sp_kernels._triton import with_backend
from sp_kernels.kernels.apply_rotary_pos_emb import triton_plan

register(
    Implementation(
        op="apply_rotary_pos_emb",
        name="triton",
        fn=lazy("sp_kernels.kernels.apply_rotary_pos_emb.triton_launch", "rotary_triton"),
        device_types=("cuda", "npu"),
        packages=("triton",),
        supports=with_backend(triton_plan.supports),
        launches=triton_plan.launches,
        description="our portable Triton rotary (partial rotary, grouped KV heads; triton / triton-ascend)",
    )
)
