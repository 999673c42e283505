"""torch_npu's ``npu_fusion_attention``: BSND for ordinary batches, TND with cumulative ``actual_seq_qlen`` /
``actual_seq_kvlen`` for packed ones; causal as ``sparse_mode=3`` (right-down causal, our bottom-right alignment)
with the compressed 2048 x 2048 upper-triangular boolean mask; grouped KV heads natively (``head_num`` = query
heads)."""
from __future__ import annotations

import torch


CAUSAL_MASK_SIZE = 2048
RIGHT_DOWN_CAUSAL = 3


def causal_mask(device=None) -> torch.Tensor:
    """The compressed mask sparse modes 2-4 take: True above the diagonal (masked)."""
    return torch.ones(CAUSAL_MASK_SIZE, CAUSAL_MASK_SIZE, dtype=torch.bool, device=device).triu(1)


def fusion_attention_args(q, k, v, *, causal: bool, scale: float, cu_seqlens: torch.Tensor | None):
    """``(query, key, value, kwargs)`` for ``npu_fusion_attention`` (pure: tested on CPU)."""
    kwargs = dict(head_num=q.shape[2], scale=scale, keep_prob=1.0)
    if cu_seqlens is None:
        kwargs["input_layout"] = "BSND"
    else:
        ends = cu_seqlens[1:].tolist()
        q, k, v = q[0], k[0], v[0]  # [T, N, D]
        kwargs.update(input_layout="TND", actual_seq_qlen=ends, actual_seq_kvlen=ends)
    if causal:
        kwargs.update(atten_mask=causal_mask(q.device), sparse_mode=RIGHT_DOWN_CAUSAL)
    else:
        kwargs.update(sparse_mode=0)
    return q, k, v, kwargs


def fusion_attention_npu(q, k, v, causal=True, scale=None, cu_seqlens=None):
    """Validated arguments as :func:`sp_kernels.fusion_attention`."""
    import torch_npu

    scale = q.shape[-1] ** -0.5 if scale is None else scale
    query, key, value, kwargs = fusion_attention_args(q, k, v, causal=causal, scale=scale, cu_seqlens=cu_seqlens)
    out = torch_npu.npu_fusion_attention(query, key, value, **kwargs)[0]
    return out if cu_seqlens is None else out.unsqueeze(0)


def supports_npu_attention(ctx) -> tuple[bool, str]:
    if ctx.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return False, f"npu_fusion_attention takes fp16/bf16/fp32, not {ctx.dtype}"
    s = ctx.shapes
    if s.get("D") != s.get("DV"):
        return False, "npu_fusion_attention needs equal q/k and v head dims"
    if s.get("TQ") is not None and s.get("TQ") != s.get("TK") and ctx.packed:
        return False, "packed sequences need TQ == TK"
    return True, ""
