"""Rotary embedding in torch with a hand-written backward (the ``rotate_half`` form, as transformers); any device.

Over the first R dims, with halves ``x = [x1 | x2]``, ``cos = [c1 | c2]``, ``sin = [s1 | s2]``::

    out1 = x1 c1 - x2 s1       out2 = x2 c2 + x1 s2        (= x cos + rotate_half(x) sin)
    dx1  = g1 c1 + g2 s2       dx2  = g2 c2 - g1 s1        (the transposed rotation)
    dcos = g x                 dsin = g rotate_half(x)     (summed over the broadcast dims, when asked for)

and the other ``D - R`` dims passed through. Each half is written straight into the output (forward) or the
gradient (backward) with ``out=`` multiply-adds: one pass over ``x``, no ``rotate_half`` / ``cat`` temporaries of
the full head size, which is what transformers' composite costs (partial rotary copies the whole tail).
"""
from __future__ import annotations

import torch

from sp_kernels._library import function_backward


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor, sign: float) -> None:
    """``out1 = x1 c1 - sign x2 s_a``, ``out2 = x2 c2 + sign x1 s_b`` over the first R dims, the rest copied; with
    ``(s_a, s_b) = (s1, s2)`` for ``sign = 1`` (the rotation) and ``(s2, s1)`` for ``sign = -1`` (its transpose)."""
    R = cos.shape[-1]
    h = R // 2
    c1, c2 = cos[..., :h], cos[..., h:]
    sa, sb = (sin[..., :h], sin[..., h:]) if sign > 0 else (sin[..., h:], sin[..., :h])
    x1, x2 = x[..., :h], x[..., h:R]
    torch.mul(x1, c1, out=out[..., :h]).addcmul_(x2, sa, value=-sign)
    torch.mul(x2, c2, out=out[..., h:R]).addcmul_(x1, sb, value=sign)
    if R < x.shape[-1]:
        out[..., R:].copy_(x[..., R:])


class _Rotary(torch.autograd.Function):
    """``out = rotary(x, cos, sin)``; ``cos``, ``sin`` broadcast against ``x[..., :R]``."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(x, cos, sin)
        return _rotated(x, cos, sin)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, cos, sin = ctx.saved_tensors
        dx = dcos = dsin = None
        if ctx.needs_input_grad[0]:
            dx = torch.empty_like(g)
            _rotate(g, cos, sin, dx, -1.0)
            dx = dx.to(x.dtype)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            R, h = cos.shape[-1], cos.shape[-1] // 2
            gr, xr = g[..., :R], x[..., :R].to(g.dtype)
            if ctx.needs_input_grad[1]:
                dcos = (gr * xr).sum_to_size(cos.shape).to(cos.dtype)
            if ctx.needs_input_grad[2]:
                rot = torch.cat([-xr[..., h:], xr[..., :h]], dim=-1)
                dsin = (gr * rot).sum_to_size(sin.shape).to(sin.dtype)
        return dx, dcos, dsin


def rotary_torch(q, k, cos, sin, unsqueeze_dim=1):
    """Validated arguments as :func:`sp_kernels.apply_rotary_pos_emb`."""
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, cos, sin)):
        return _Rotary.apply(q, cos, sin), _Rotary.apply(k, cos, sin)
    return _rotated(q, cos, sin), _rotated(k, cos, sin)  # inference (decoding): no autograd node


def _rotated(x, cos, sin):
    out = x.new_empty(x.shape, dtype=torch.promote_types(x.dtype, cos.dtype))
    _rotate(x, cos, sin, out, 1.0)
    return out


def forward_saving(q, k, cos, sin, unsqueeze_dim=1):
    """:func:`rotary_torch` without autograd; its backward needs only the inputs: nothing saved."""
    with torch.no_grad():
        return rotary_torch(q, k, cos, sin, unsqueeze_dim), []


def backward_saved(saved, grads, needs, q, k, cos, sin, unsqueeze_dim=1):
    """``_Rotary``'s backward for ``q`` and for ``k``; ``cos`` and ``sin`` get the sum of both."""
    cos_, sin_ = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    got = [None, None, None, None]
    for j, (x, g) in enumerate(zip((q, k), grads)):
        if g is None:
            continue
        dx, dcos, dsin = function_backward(_Rotary, (g,), (x, cos_, sin_), (needs[j], needs[2], needs[3]))
        got[j] = dx
        for i, d in ((2, dcos), (3, dsin)):
            if d is not None:
                d = d.squeeze(unsqueeze_dim)
                got[i] = d if got[i] is None else got[i] + d
    return got
