"""Attention via ``F.scaled_dot_product_attention``, one call per packed sequence; any device."""
from __future__ import annotations

import torch
import torch.nn.functional as F


#: Device types whose SDPA takes ``enable_gqa`` (elsewhere kv heads are repeated first).
_NATIVE_GQA = ("cpu", "cuda")


def _sdpa(q, k, v, *, causal, scale, native_gqa=None):
    """``q`` ``[B, H, TQ, D]``, ``k``/``v`` ``[B, HKV, TK, *]`` -> ``[B, H, TQ, DV]``, bottom-right causal."""
    H, TQ = q.shape[1], q.shape[2]
    HKV, TK = k.shape[1], k.shape[2]
    if native_gqa is None:
        native_gqa = q.device.type in _NATIVE_GQA
    gqa = {}
    if H != HKV:
        if native_gqa:
            gqa = {"enable_gqa": True}
        else:
            k = k.repeat_interleave(H // HKV, dim=1)
            v = v.repeat_interleave(H // HKV, dim=1)
    if TQ == 0 or TK == 0:
        # no query, or no key to see: output 0, still attached to the graph (the empty input sums to exactly 0)
        return q.new_zeros(q.shape[:3] + (v.shape[-1],)) + (q if TQ == 0 else v).sum()
    if causal and TQ > TK:
        # rows i < TQ - TK see no key: output 0 (flash-attn's convention); the rest is a square causal problem
        skip = TQ - TK
        tail = F.scaled_dot_product_attention(q[:, :, skip:], k, v, is_causal=True, scale=scale, **gqa)
        return torch.cat([q.new_zeros(q.shape[:2] + (skip, v.shape[-1])), tail], dim=2)
    if not causal or TQ == 1:  # one query (a decoded token) sees every key
        return F.scaled_dot_product_attention(q, k, v, scale=scale, **gqa)
    if TQ == TK:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, **gqa)
    # TQ < TK: query i sees keys j <= i + TK - TQ
    i = torch.arange(TQ, device=q.device).view(TQ, 1)
    j = torch.arange(TK, device=q.device).view(1, TK)
    mask = j <= i + (TK - TQ)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, **gqa)


def attention_sdpa(q, k, v, causal=True, scale=None, cu_seqlens=None, *, native_gqa=None):
    """Validated arguments as :func:`sp_kernels.fusion_attention`."""
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, dim]
    if cu_seqlens is None:
        out = _sdpa(qt, kt, vt, causal=causal, scale=scale, native_gqa=native_gqa)
        return out.transpose(1, 2).contiguous()
    bounds = cu_seqlens.tolist()
    pieces = []
    for s, e in zip(bounds, bounds[1:]):
        if e > s:
            sl = slice(s, e)
            pieces.append(
                _sdpa(qt[:, :, sl], kt[:, :, sl], vt[:, :, sl], causal=causal, scale=scale, native_gqa=native_gqa)
            )
    if not pieces:  # no token at all
        return _sdpa(qt, kt, vt, causal=causal, scale=scale, native_gqa=native_gqa).transpose(1, 2).contiguous()
    return torch.cat(pieces, dim=2).transpose(1, 2).contiguous()


def flash_cpu_applies(q, k, v, causal=True, scale=None, cu_seqlens=None) -> bool:
    """Whether the split below covers a call: CPU's flash attention, whose forward returns the log-sum-exp its
    backward takes (an ordinary batch, as many queries as keys)."""
    return q.device.type == "cpu" and cu_seqlens is None and q.shape[1] == k.shape[1] and q.shape[1] > 0


def forward_saving(q, k, v, causal=True, scale=None, cu_seqlens=None):
    """``(out, [out_bhtd, logsumexp])`` from ``aten._scaled_dot_product_flash_attention_for_cpu`` (what
    ``F.scaled_dot_product_attention`` runs on CPU), grouped heads native."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), 0.0, causal, scale=scale)
    return out.transpose(1, 2).contiguous(), [out, lse]


def backward_saved(saved, grads, needs, q, k, v, causal=True, scale=None, cu_seqlens=None):
    out, lse = saved
    dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        grads[0].transpose(1, 2), q.transpose(1, 2), k.transpose(1, 2),
        v.transpose(1, 2), out, lse, 0.0, causal, scale=scale)
    got = [dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2), None]
    return [d if need else None for d, need in zip(got, needs)]
