"""Gated delta rule (the Gated DeltaNet token mixer): ``chunk_gated_delta_rule``.

This file declares the op: its implementations in their order of preference (best first; ``reference`` only when
forced) and the Unified Buffer / counted models of the kernels they launch (coefficients:
``sp_kernels/dispatch/data/ub_models.json``). The contract and validation are in ``api.py``, the float64 reference
in ``naive.py``; tests: ``tests/ops/test_chunk_gated_delta_rule.py``; benchmark:
``bench/bench_chunk_gated_delta_rule.py``.
"""
import functools

from sp_kernels._lazy import lazy
from sp_kernels._triton import triton_implementation
from sp_kernels.dispatch import ANY_DEVICE, Implementation, Residuals, declare, reference
from sp_kernels.kernels.chunk_gated_delta_rule import chunk, naive, recurrent, triton_plan
from sp_kernels.kernels.chunk_gated_delta_rule.adapters import fla, mindspeed
from sp_kernels.kernels.chunk_gated_delta_rule.api import chunk_gated_delta_rule

declare(
    "chunk_gated_delta_rule",
    Implementation(op="chunk_gated_delta_rule", name="mindspeed", fn=mindspeed.chunk_gated_delta_rule_mindspeed,
                   device_types=("npu",), packages=("torch_npu", "mindspeed.core.ssm.npu_chunk_gated_delta_rule"),
                   supports=mindspeed.supports_mindspeed,
                   description="MindSpeed's Triton gated delta rule (Ascend; bf16/fp16; initial states via our torch "
                               "path)"),
    Implementation(op="chunk_gated_delta_rule", name="fla_fused_recurrent",
                   fn=fla.fused_recurrent_gated_delta_rule_fla, device_types=("cuda", "npu"),
                   packages=("fla.ops.gated_delta_rule",), supports=fla.supports_fused_recurrent,
                   description="flash-linear-attention's fused recurrent kernel: decoding (no backward, T <= 64)"),
    Implementation(op="chunk_gated_delta_rule", name="fla", fn=fla.chunk_gated_delta_rule_fla,
                   device_types=("cuda", "npu"), packages=("fla.ops.gated_delta_rule",),
                   supports=lazy("sp_kernels._fla", "supports_fla"),
                   description="flash-linear-attention's chunked gated delta rule (Triton; Triton-Ascend backend on "
                               "NPU)"),
    triton_implementation("chunk_gated_delta_rule", triton_plan,
                          "sp_kernels.kernels.chunk_gated_delta_rule.triton_launch."
                          "fused_recurrent_gated_delta_rule_triton",
                          "our portable Triton fused recurrent delta rule (forward only, T <= 64: decode)"),
    Implementation(op="chunk_gated_delta_rule", name="torch_recurrent", fn=recurrent.recurrent_gated_delta_rule_torch,
                   device_types=ANY_DEVICE, supports=recurrent.supports_short,
                   decode_step=functools.partial(recurrent.one_token, inplace=True),
                   description=f"token-by-token recurrence in torch (short inputs, T <= {recurrent.MAX_T}: "
                               "decoding)"),
    Implementation(op="chunk_gated_delta_rule", name="torch", fn=chunk.chunk_gated_delta_rule_torch,
                   device_types=ANY_DEVICE, residuals=Residuals(chunk.forward_saving, chunk.backward_saved),
                   description="chunked torch (any device)"),
    reference("chunk_gated_delta_rule", naive.naive_recurrent_gated_delta_rule,
              "per-token recurrence (float64-capable reference)"),
    ub_models=triton_plan.KERNELS,
    counted_models=triton_plan.KERNELS,
)

__all__ = ["chunk_gated_delta_rule"]
