"""Causal conv with ``F.conv1d`` (depthwise, ``groups=D``) over the left context + the sequence; any device."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels import _varlen


def causal_conv1d_torch(
    x, weight, bias=None, activation=None, initial_state=None, output_final_state=False, cu_seqlens=None
):
    """Validated arguments as :func:`kernels.causal_conv1d`."""
    B, T, D = x.shape
    W = weight.shape[1]
    if cu_seqlens is None:
        seq = x.transpose(1, 2)  # [B, D, T]
        lens = None
    else:
        seq = _varlen.pad(x[0], cu_seqlens).transpose(1, 2)  # [N, D, L], zeros after each sequence
        lens = _varlen.lengths(cu_seqlens)
    N, L = seq.shape[0], seq.shape[2]
    if initial_state is None:
        left = seq.new_zeros((N, D, W - 1))
    else:
        left = initial_state
    ctx = torch.cat([left, seq], dim=-1)  # [N, D, W-1+L]: ctx[..., s] is input s-(W-1)
    if L == 0:
        y = ctx[..., :0].clone()  # no token: empty, still attached to the graph
    else:
        y = F.conv1d(ctx, weight.unsqueeze(1), bias, groups=D)  # [N, D, L]
    if activation in ("silu", "swish"):  # the API normalises to "silu"; direct callers may pass either
        y = F.silu(y)
    y = y.transpose(1, 2)  # [N, L, D]
    if cu_seqlens is not None:
        y = _varlen.unpad(y, cu_seqlens).unsqueeze(0)

    final = None
    if output_final_state:
        if lens is None:
            final = ctx[..., ctx.shape[-1] - (W - 1) :]
        else:
            # the W-1 columns ending at each sequence's last token: ctx[n, :, l_n : l_n + W-1]
            idx = torch.tensor(lens, device=x.device).view(N, 1) + torch.arange(W - 1, device=x.device)
            final = ctx.gather(2, idx.view(N, 1, W - 1).expand(N, D, W - 1))
        final = final.contiguous()
    return y.contiguous(), final
