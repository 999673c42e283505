"""Softmax attention with grouped KV heads, causal (bottom-right) or not, packed sequences: ``fusion_attention``.

This file declares the op: its implementations in their order of preference (best first; ``reference`` only when
forced). None launches a kernel of ours, so there are no Unified Buffer models. The contract and validation are in
``api.py``, the float64 reference in ``naive.py``; tests: ``tests/ops/test_fusion_attention.py``; benchmark:
``bench/bench_fusion_attention.py``.
"""
from sp_kernels.dispatch import ANY_DEVICE, Implementation, Residuals, declare, reference
from sp_kernels.kernels.fusion_attention import naive, torch_impl
from sp_kernels.kernels.fusion_attention.adapters import flash_attn, npu
from sp_kernels.kernels.fusion_attention.api import fusion_attention

declare(
    "fusion_attention",
    Implementation(op="fusion_attention", name="flash_attn", fn=flash_attn.fusion_attention_flash_attn,
                   device_types=("cuda",), packages=("flash_attn",), supports=flash_attn.supports_flash_attn,
                   description="flash-attn 2 (varlen for packed sequences)"),
    Implementation(op="fusion_attention", name="torch_npu.npu_fusion_attention", fn=npu.fusion_attention_npu,
                   device_types=("npu",), packages=("torch_npu",), supports=npu.supports_npu_attention,
                   description="torch_npu.npu_fusion_attention (BSND / TND, right-down causal sparse mode)"),
    Implementation(op="fusion_attention", name="sdpa", fn=torch_impl.attention_sdpa, device_types=ANY_DEVICE,
                   residuals=Residuals(torch_impl.forward_saving, torch_impl.backward_saved,
                                       applies=torch_impl.flash_cpu_applies),
                   description="F.scaled_dot_product_attention, one call per packed sequence"),
    reference("fusion_attention", naive.attention_reference,
              "explicit scores, mask and softmax over the whole batch (float64-capable, O(T^2) memory)"),
)

__all__ = ["fusion_attention"]
