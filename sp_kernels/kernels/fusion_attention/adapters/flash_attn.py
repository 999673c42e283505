"""flash-attn (CUDA): ``flash_attn_func`` for ordinary batches, ``flash_attn_varlen_func`` for packed ones
(int32 ``cu_seqlens`` and the longest sequence). Its causal mask is aligned bottom-right, as ours."""
from __future__ import annotations

import torch

from sp_kernels.dispatch.context import dtype_name


def varlen_args(cu_seqlens: torch.Tensor) -> dict:
    """The packed-sequence keywords of ``flash_attn_varlen_func`` (pure: tested on CPU)."""
    cu = cu_seqlens.to(torch.int32)
    longest = int((cu_seqlens[1:] - cu_seqlens[:-1]).max()) if cu_seqlens.numel() > 1 else 0
    return dict(cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=longest, max_seqlen_k=longest)


def fusion_attention_flash_attn(q, k, v, causal=True, scale=None, cu_seqlens=None):
    """Validated arguments as :func:`sp_kernels.fusion_attention`."""
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    if cu_seqlens is None:
        return flash_attn_func(q, k, v, softmax_scale=scale, causal=causal)
    out = flash_attn_varlen_func(q[0], k[0], v[0], softmax_scale=scale, causal=causal, **varlen_args(cu_seqlens))
    return out.unsqueeze(0)


def supports_flash_attn(ctx) -> tuple[bool, str]:
    if ctx.dtype not in (torch.float16, torch.bfloat16):
        return False, f"flash-attn takes fp16/bf16, not {dtype_name(ctx.dtype)}"
    cap = ctx.device.capability
    if cap is not None and cap < (8, 0):
        return False, f"flash-attn 2 needs sm80+, got sm{cap[0]}{cap[1]}"
    if ctx.shapes.get("D", 0) > 256:
        return False, f"flash-attn supports head dims up to 256, got {ctx.shapes['D']}"
    return True, ""
