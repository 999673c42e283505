"""Rotary embedding in plain torch ops (``rotate_half`` form, as transformers); any device."""
from __future__ import annotations

import torch


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    R = cos.shape[-1]
    if R == x.shape[-1]:
        return x * cos + _rotate_half(x) * sin
    x_rot, x_pass = x[..., :R], x[..., R:]
    out = x_rot * cos + _rotate_half(x_rot) * sin
    return torch.cat([out, x_pass.to(out.dtype)], dim=-1)


def rotary_torch(q, k, cos, sin, unsqueeze_dim=1):
    """Validated arguments as :func:`kernels.apply_rotary_pos_emb`."""
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    return _apply(q, cos, sin), _apply(k, cos, sin)
