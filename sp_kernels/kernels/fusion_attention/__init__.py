"""Softmax attention with grouped KV heads, causal (bottom-right) or not, packed sequences."""
from sp_kernels.dispatch import prefer
from sp_kernels.kernels.fusion_attention.api import fusion_attention

# the order of preference among the implementations that can run a call (reference: only when forced)
prefer("fusion_attention", "flash_attn", "torch_npu.npu_fusion_attention", "sdpa", "reference")

# each implementation registers itself in its own module
from sp_kernels.kernels.fusion_attention import flash_attn, naive, npu, torch_impl  # noqa: E402,F401

__all__ = ["fusion_attention"]
