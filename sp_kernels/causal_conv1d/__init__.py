"""Depthwise causal 1-D convolution (the short conv in front of the delta rule)."""
from dispatch import Implementation, prefer, register
from sp_kernels._lazy import lazy
from sp_kernels._triton import with_backend
from sp_kernels.causal_conv1d.api import causal_conv1d
from sp_kernels.causal_conv1d.fla import ascend_launches, causal_conv1d_fla
from sp_kernels.causal_conv1d.naive import causal_conv1d_reference
from sp_kernels.causal_conv1d.torch_impl import causal_conv1d_torch

# the order of preference among the implementations that can run a call (reference: only when forced)
prefer("causal_conv1d", "triton", "fla", "torch", "reference")

register(
    Implementation(
        op="causal_conv1d",
        name="reference",
        fn=causal_conv1d_reference,
        device_types=("cpu", "cuda", "npu"),
        selectable=False,
        description="the definition with explicit loops over t and w (float64-capable, slow)",
    )
)
register(
    Implementation(
        op="causal_conv1d",
        name="torch",
        fn=causal_conv1d_torch,
        device_types=("cpu", "cuda", "npu"),
        description="channels-last shifted multiply-adds tiled over tokens, hand-written backward; packed via zero padding",
    )
)

register(
    Implementation(
        op="causal_conv1d",
        name="fla",
        fn=causal_conv1d_fla,
        device_types=("cuda", "npu"),
        packages=("fla.modules.causal_conv1d",),
        supports=lazy("sp_kernels._fla", "supports_fla"),
        launches=ascend_launches,
        description="flash-linear-attention's Triton causal conv (Triton-Ascend backend on NPU)",
    )
)


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

__all__ = ["causal_conv1d"]
