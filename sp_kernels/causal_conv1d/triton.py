"""Registration of our Triton kernel for the op (``causal_conv1d``): the kernels live in a module that imports
triton, which is probed lazily, so this file points at it without importing it."""
from dispatch import Implementation, register
from sp_kernels._lazy import lazy
from sp_kernels._triton import with_backend

register(
    Implementation(
        op="causal_conv1d",
        name="triton",
        fn=lazy("sp_kernels.causal_conv1d.triton_impl", "causal_conv1d_triton"),
        device_types=("cuda", "npu"),
        packages=("triton",),
        supports=with_backend(lazy("sp_kernels.causal_conv1d.triton_impl", "supports")),
        launches=lazy("sp_kernels.causal_conv1d.triton_impl", "launches"),
        description="our portable Triton causal conv (triton / triton-ascend; tiles from the device profile)",
    )
)
