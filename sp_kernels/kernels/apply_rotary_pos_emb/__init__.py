"""Rotary position embedding (transformers' ``apply_rotary_pos_emb``, partial rotary included).

This file declares the op: its implementations in their order of preference (best first; ``reference`` only when
forced) and the Unified Buffer / counted models of the kernels they launch (coefficients:
``sp_kernels/dispatch/data/ub_models.json``). The contract and validation are in ``api.py``, the float64 reference
in ``naive.py``; tests: ``tests/ops/test_apply_rotary_pos_emb.py``; benchmark: ``bench/bench_apply_rotary_pos_emb.py``.
"""
from sp_kernels._lazy import lazy
from sp_kernels._triton import triton_implementation
from sp_kernels.dispatch import ANY_DEVICE, Implementation, Residuals, declare, reference
from sp_kernels.kernels.apply_rotary_pos_emb import naive, torch_impl, triton_plan
from sp_kernels.kernels.apply_rotary_pos_emb.adapters import fla, npu
from sp_kernels.kernels.apply_rotary_pos_emb.api import apply_rotary_pos_emb

declare(
    "apply_rotary_pos_emb",
    Implementation(op="apply_rotary_pos_emb", name="torch_npu.npu_rotary_mul", fn=npu.apply_rotary_pos_emb_npu,
                   device_types=("npu",), packages=("torch_npu",), supports=npu.supports_npu_rotary,
                   description="torch_npu.npu_rotary_mul on the rotary part, the tail passed through"),
    triton_implementation("apply_rotary_pos_emb", triton_plan,
                          "sp_kernels.kernels.apply_rotary_pos_emb.triton_launch.rotary_triton",
                          "our portable Triton rotary (partial rotary, grouped KV heads; triton / triton-ascend)"),
    Implementation(op="apply_rotary_pos_emb", name="fla", fn=fla.apply_rotary_pos_emb_fla,
                   device_types=("cuda", "npu"), packages=("fla.modules.rotary",),
                   supports=lazy("sp_kernels._fla", "supports_fla"),
                   description="flash-linear-attention's rotary (half-width cos/sin shared by the batch; else torch, "
                               "warned)"),
    Implementation(op="apply_rotary_pos_emb", name="torch", fn=torch_impl.rotary_torch, device_types=ANY_DEVICE,
                   residuals=Residuals(torch_impl.forward_saving, torch_impl.backward_saved),
                   description="x * cos + rotate_half(x) * sin over the first R dims, the rest passed through"),
    reference("apply_rotary_pos_emb", naive.rotary_reference,
              "per-pair rotation formula, one pair of dims at a time (float64-capable, slow)"),
    ub_models=triton_plan.KERNELS,
    counted_models=triton_plan.KERNELS,
)

__all__ = ["apply_rotary_pos_emb"]
