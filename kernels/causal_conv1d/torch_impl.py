"""Causal depthwise conv in torch, channels-last, with a hand-written backward; any device.

``y[n, t, d] = bias[d] + sum_j weight[d, W-1-j] * x[n, t - j, d]``: W shifted multiply-adds over ``[N, T, D]``
views — no layout change, no padding copy — and the backward is the same shape of work (dx: W shifted
multiply-adds, dweight: W dot products over tokens, dbias: one sum, the SiLU derivative in one fused pass). transformers'
``F.conv1d(groups=D)`` path is several times slower on CPU at Qwen3.5 widths (see bench/bench_causal_conv1d.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels import _varlen


def _shift_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x [N, L, D]`` (no left context: zeros before it) -> pre-activation ``[N, L, D]``.

    Output ``t`` takes input ``t - j`` through ``weight[:, W-1-j]``: W shifted multiply-adds, no padding copy.
    """
    W = weight.shape[1]
    y = x * weight[:, W - 1]
    for j in range(1, min(W, x.shape[1] + 1)):
        y[:, j:].addcmul_(x[:, :-j], weight[:, W - 1 - j])
    if bias is not None:
        y += bias
    return y


class _CausalConv(torch.autograd.Function):
    """Forward and backward of the causal depthwise conv over ``x [N, L, D]`` with zeros before each row."""

    @staticmethod
    def forward(fctx, x, weight, bias, silu: bool):
        pre = _shift_conv(x, weight, bias)
        fctx.save_for_backward(x, weight, pre if silu else None)
        fctx.has_bias, fctx.silu = bias is not None, silu
        return F.silu(pre) if silu else pre

    @staticmethod
    def backward(fctx, dy):
        x, weight, pre = fctx.saved_tensors
        W, L = weight.shape[1], x.shape[1]
        if fctx.silu:
            dy = torch.ops.aten.silu_backward(dy, pre)  # one fused pass
        dx = dweight = dbias = None
        if fctx.needs_input_grad[0]:
            dx = dy * weight[:, W - 1]
            for j in range(1, min(W, L + 1)):
                dx[:, :-j].addcmul_(dy[:, j:], weight[:, W - 1 - j])
        if fctx.needs_input_grad[1]:
            flat_dy, flat_x = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])
            cols = []
            for j in reversed(range(W)):  # weight column W-1-j pairs output t with input t-j (same row)
                if j >= L:
                    cols.append(dy.new_zeros(dy.shape[-1]))
                    continue
                a = dy[:, j:].reshape(-1, dy.shape[-1]) if j else flat_dy
                b = x[:, : L - j].reshape(-1, x.shape[-1]) if j else flat_x
                cols.append(torch.linalg.vecdot(a, b, dim=0))
            dweight = torch.stack(cols, dim=1)
        if fctx.has_bias and fctx.needs_input_grad[2]:
            dbias = dy.sum((0, 1))
        return dx, dweight, dbias, None


def causal_conv1d_torch(
    x, weight, bias=None, activation=None, initial_state=None, output_final_state=False, cu_seqlens=None
):
    """Validated arguments as :func:`kernels.causal_conv1d`."""
    B, T, D = x.shape
    W = weight.shape[1]
    seq = x if cu_seqlens is None else _varlen.pad(x[0], cu_seqlens)  # [N, L, D], zeros after each sequence
    N = seq.shape[0]
    silu = activation in ("silu", "swish")
    if initial_state is None:
        y = _CausalConv.apply(seq, weight, bias, silu)
        left = seq.new_zeros((N, W - 1, D)) if output_final_state else None
    else:  # the state's W-1 inputs go in front; their outputs are dropped
        left = initial_state.transpose(1, 2)
        y = _CausalConv.apply(torch.cat([left, seq], dim=1), weight, bias, silu)[:, W - 1 :]
    if cu_seqlens is not None:
        y = _varlen.unpad(y, cu_seqlens).unsqueeze(0)

    final = None
    if output_final_state:
        if cu_seqlens is None:  # the last W-1 of [state | sequence]
            final = torch.cat([left, seq[:, max(0, seq.shape[1] - (W - 1)) :]], dim=1)[:, -(W - 1) :]
        else:
            ctx = torch.cat([left, seq], dim=1)  # [N, W-1+L, D]: ctx[:, s] is input s-(W-1)  # the W-1 inputs ending at each sequence's last token: ctx[n, l_n : l_n + W-1]
            lens = torch.tensor(_varlen.lengths(cu_seqlens), device=x.device)
            idx = lens.view(N, 1) + torch.arange(W - 1, device=x.device)
            final = ctx.gather(1, idx.view(N, W - 1, 1).expand(N, W - 1, D))
        final = final.transpose(1, 2).contiguous()
    return y, final
