"""Depthwise causal 1-D convolution (the short conv in front of the delta rule): ``causal_conv1d``.

This file declares the op: its implementations in their order of preference (best first; ``reference`` only when
forced) and the Unified Buffer / counted models of the kernels they launch (coefficients:
``sp_kernels/dispatch/data/ub_models.json``). The contract and validation are in ``api.py``, the float64 reference
in ``naive.py``; tests: ``tests/ops/test_causal_conv1d.py``; benchmark: ``bench/bench_causal_conv1d.py``.
"""
from sp_kernels._lazy import lazy
from sp_kernels._triton import triton_implementation
from sp_kernels.dispatch import ANY_DEVICE, Implementation, Residuals, declare, reference
from sp_kernels._fla import npu_paths
from sp_kernels.kernels.causal_conv1d import naive, torch_impl, triton_plan
from sp_kernels.kernels.causal_conv1d.adapters import fla
from sp_kernels.kernels.causal_conv1d.api import causal_conv1d

declare(
    "causal_conv1d",
    triton_implementation("causal_conv1d", triton_plan, "sp_kernels.kernels.causal_conv1d.triton_launch."
                          "causal_conv1d_triton",
                          "our portable Triton causal conv (triton / triton-ascend; tiles from the device profile)"),
    Implementation(op="causal_conv1d", name="fla", fn=fla.causal_conv1d_fla, device_types=("cuda", "npu"),
                   packages=(npu_paths().conv_module,), supports=lazy("sp_kernels._fla", "supports_fla"),
                   launches=fla.ascend_launches,
                   description="flash-linear-attention's Triton causal conv (Triton-Ascend backend on NPU)"),
    Implementation(op="causal_conv1d", name="torch", fn=torch_impl.causal_conv1d_torch, device_types=ANY_DEVICE,
                   residuals=Residuals(torch_impl.forward_saving, torch_impl.backward_saved),
                   description="channels-last shifted multiply-adds tiled over tokens, hand-written backward; packed "
                               "via zero padding"),
    reference("causal_conv1d", naive.causal_conv1d_reference,
              "the definition with explicit loops over t and w (float64-capable, slow)"),
    ub_models=(*triton_plan.KERNELS, *fla.UB_MODELS),
    counted_models=triton_plan.KERNELS,
)

__all__ = ["causal_conv1d"]
