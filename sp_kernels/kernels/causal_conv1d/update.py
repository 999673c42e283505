"""One decoded token through the causal conv, against transformers' cache layout (torch, any device).

The cache (``cache_params.get_conv_state(layer)``) holds the last ``W`` inputs ``[B, D, W]``, oldest first. A step
shifts them left by one in place, appends the new input and takes the window's dot product with the weight: a
few elementwise ops on ``B * D * W`` numbers, with no concatenation and no convolution launch (transformers'
``torch_causal_conv1d_update`` concatenates and runs a grouped ``conv1d``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_conv1d_update(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor | None = None, activation: str | None = None) -> torch.Tensor:
    """``x [B, D]`` -> ``y [B, D]`` in ``x``'s dtype; ``conv_state [B, D, W]`` is updated in place.

    ``y[b, d] = act(bias[d] + sum_w weight[d, w] * window[b, d, w])`` with ``window`` the state after the step
    (the ``W - 1`` previous inputs, then ``x``), computed in ``weight``'s dtype as transformers does.
    ``activation``: ``None`` or ``'silu'`` / ``'swish'``.
    """
    conv_state.copy_(torch.cat([conv_state[..., 1:], x[..., None].to(conv_state.dtype)], dim=-1))
    y = torch.linalg.vecdot(conv_state.to(weight.dtype), weight)
    if bias is not None:
        y += bias
    if activation is not None:
        y = F.silu(y, inplace=True)
    return y.to(x.dtype)
