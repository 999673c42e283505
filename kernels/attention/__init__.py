"""Softmax attention with grouped KV heads, causal (bottom-right) or not, packed sequences."""
from dispatch import Implementation, register
from kernels.attention.api import fusion_attention
from kernels.attention.naive import attention_reference
from kernels.attention.torch_impl import attention_sdpa

register(
    Implementation(
        op="fusion_attention",
        name="reference",
        fn=attention_reference,
        device_types=("cpu", "cuda", "npu"),
        priority=0,
        selectable=False,
        description="explicit scores, mask and softmax over the whole batch (float64-capable, O(T^2) memory)",
    )
)
register(
    Implementation(
        op="fusion_attention",
        name="sdpa",
        fn=attention_sdpa,
        device_types=("cpu", "cuda", "npu"),
        priority=10,
        description="F.scaled_dot_product_attention, one call per packed sequence",
    )
)

__all__ = ["fusion_attention"]
