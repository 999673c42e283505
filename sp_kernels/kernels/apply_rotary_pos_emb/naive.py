"""Reference rotary embedding: the per-pair rotation formula, one pair of dims at a time (float64-capable)."""
from __future__ import annotations

import torch



def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    R = cos.shape[-1]
    half = R // 2
    out_dtype = torch.promote_types(x.dtype, cos.dtype)
    acc = torch.promote_types(out_dtype, torch.float32)
    xs, c, s = x.to(acc), cos.to(acc), sin.to(acc)
    out = xs.clone()
    for i in range(half):
        j = i + half
        out[..., i] = xs[..., i] * c[..., i] - xs[..., j] * s[..., i]
        out[..., j] = xs[..., j] * c[..., j] + xs[..., i] * s[..., j]
    return out.to(out_dtype)


def rotary_reference(q, k, cos, sin, unsqueeze_dim=1):
    """Validated arguments as :func:`sp_kernels.apply_rotary_pos_emb`."""
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    return _rotate(q, cos, sin), _rotate(k, cos, sin)
