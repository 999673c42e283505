"""Reference attention: explicit scores, mask and softmax over the whole (packed) batch (float64-capable)."""
from __future__ import annotations

import torch



def attention_reference(q, k, v, causal=True, scale=None, cu_seqlens=None):
    """Validated arguments as :func:`sp_kernels.fusion_attention`; computes in at least float32."""
    B, TQ, H, D = q.shape
    TK, HKV = k.shape[1], k.shape[2]
    scale = D**-0.5 if scale is None else scale
    acc = torch.promote_types(q.dtype, torch.float32)
    group = H // HKV
    kv_head = torch.arange(H, device=q.device) // group
    qf = q.to(acc).transpose(1, 2)  # [B, H, TQ, D]
    kf = k.to(acc).transpose(1, 2)[:, kv_head]  # [B, H, TK, D]
    vf = v.to(acc).transpose(1, 2)[:, kv_head]  # [B, H, TK, DV]

    i = torch.arange(TQ, device=q.device).view(TQ, 1)
    j = torch.arange(TK, device=q.device).view(1, TK)
    allowed = torch.ones(TQ, TK, dtype=torch.bool, device=q.device)
    if causal:
        allowed = allowed & (j <= i + (TK - TQ))
    if cu_seqlens is not None:  # TQ == TK: block-diagonal, one block per sequence
        seq = torch.bucketize(torch.arange(TQ, device=q.device), cu_seqlens[1:], right=True)
        allowed = allowed & (seq.view(TQ, 1) == seq.view(1, TK))
    sees_any = allowed.any(dim=1, keepdim=True)  # [TQ, 1]; rows that see nothing output 0
    allowed = allowed | ~sees_any

    scores = scale * qf @ kf.transpose(-1, -2)  # [B, H, TQ, TK]
    scores = scores.masked_fill(~allowed, float("-inf"))
    p = torch.softmax(scores, dim=-1)
    o = (p @ vf) * sees_any.to(acc)  # [B, H, TQ, DV]
    return o.transpose(1, 2).to(q.dtype)
