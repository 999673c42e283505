"""Registration of our Triton kernel for the op (``rotary``): the kernels live in a module that imports
triton, which is probed lazily, so this file points at it without importing it."""
from dispatch import Implementation, register
from sp_kernels._lazy import lazy
from sp_kernels._triton import with_backend

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
