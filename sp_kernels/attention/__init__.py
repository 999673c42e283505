"""Softmax attention with grouped KV heads, causal (bottom-right) or not, packed sequences."""
from dispatch import Implementation, prefer, register
from sp_kernels._lazy import lazy
from sp_kernels.attention.api import fusion_attention
from sp_kernels.attention.naive import attention_reference
from sp_kernels.attention.torch_impl import attention_sdpa

# the order of preference among the implementations that can run a call (reference: only when forced)
prefer("fusion_attention", "flash_attn", "torch_npu.npu_fusion_attention", "sdpa", "reference")

register(
    Implementation(
        op="fusion_attention",
        name="reference",
        fn=attention_reference,
        device_types=("cpu", "cuda", "npu"),
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
        description="F.scaled_dot_product_attention, one call per packed sequence",
    )
)

register(
    Implementation(
        op="fusion_attention",
        name="flash_attn",
        fn=lazy("sp_kernels.attention.flash_attn", "fusion_attention_flash_attn"),
        device_types=("cuda",),
        packages=("flash_attn",),
        supports=lazy("sp_kernels.attention.flash_attn", "supports_flash_attn"),
        description="flash-attn 2 (varlen for packed sequences)",
    )
)
register(
    Implementation(
        op="fusion_attention",
        name="torch_npu.npu_fusion_attention",
        fn=lazy("sp_kernels.attention.npu", "fusion_attention_npu"),
        device_types=("npu",),
        packages=("torch_npu",),
        supports=lazy("sp_kernels.attention.npu", "supports_npu_attention"),
        description="torch_npu.npu_fusion_attention (BSND / TND, right-down causal sparse mode)",
    )
)

__all__ = ["fusion_attention"]
