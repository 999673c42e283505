"""Causal depthwise conv in torch, channels-last, tiled over tokens, with a hand-written backward; any device.

``y[n, t, d] = act(bias[d] + sum_k weight[d, k] * x[n, t - (W-1) + k, d])``, the inputs before ``t = 0`` being zeros
(or the initial state's W-1 inputs). transformers' ``F.conv1d(groups=D)`` path is several times slower on CPU at
Qwen3.5 widths (see bench/bench_causal_conv1d.py).

Why tiles: at those widths a full ``[N, L, D]`` temporary is tens of MB; on CPU every fresh one costs page faults and
every elementwise pass over it goes to DRAM. So the tokens are cut into tiles of about ``TILE_BYTES`` (float32); per
tile the W shifted multiply-adds run in small reused scratch buffers (float32 at least, also for bf16 inputs) that
stay in cache, and the only full-size allocations are ``y`` (forward) and ``dx`` (backward). The pre-activation is not
saved: backward recomputes it tile by tile from ``x`` (W-1 rows of left context), then ``dpre = silu'(pre) * dy``,
``dx`` = W shifted multiply-adds of ``dpre`` over the tile and the W-1 rows after it (carried over from the tile
after, as backward walks the tiles from last to first), and ``dweight`` / ``dbias`` are accumulated per tile (all W
taps in one op over a strided window view of ``x``) and reduced once at the end.
"""
from __future__ import annotations

import torch

from sp_kernels import _varlen
from sp_kernels._library import function_backward

TILE_BYTES = 1 << 20  # per scratch buffer; about the best from 0.5 to 4 MiB at D = 8192 on a 2-core CPU


def _tile_len(row_bytes: int, W: int) -> int:
    """Tokens per tile: about ``TILE_BYTES`` per buffer, at least W (each tile also reads W-1 rows before it)."""
    return max(W, TILE_BYTES // max(row_bytes, 1))


def _rows(x, left, a: int, b: int, buf):
    """Rows ``a <= t < b`` (``0 < b <= L``) of ``x [N, L, D]`` in ``buf``'s dtype: a view of ``x`` when possible,
    else copied into ``buf[:, : b - a]``. Rows ``t < 0`` come from ``left`` (its last row is ``t = -1``; zeros when
    None; ``a >= -left.shape[1]``)."""
    if a >= 0 and x.dtype == buf.dtype:
        return x[:, a:b]
    out = buf[:, : b - a]
    lo = max(a, 0)
    out[:, lo - a :].copy_(x[:, lo:b])
    if a < 0:
        if left is None:
            out[:, :-a].zero_()
        else:
            out[:, :-a].copy_(left[:, left.shape[1] + a :])
    return out


def _taps(src, w, n: int, out, bias=None):
    """``out[:, i] = bias + sum_k w[k] * src[:, i + k]`` for ``i < n``: W shifted multiply-adds (src: n+W-1 rows)."""
    if bias is None:
        torch.mul(src[:, :n], w[0], out=out)
    else:
        torch.addcmul(bias, src[:, :n], w[0], out=out)
    for k in range(1, len(w)):
        out.addcmul_(src[:, k : k + n], w[k])
    return out


class _CausalConv(torch.autograd.Function):
    """Forward and backward of the causal depthwise conv over ``x [N, L, D]``; ``left [N, W-1, D]`` (or None: zeros)
    are the inputs before each row's first token."""

    @staticmethod
    def forward(fctx, x, weight, bias, left, silu: bool):
        N, L, D = x.shape
        W = weight.shape[1]
        acc = torch.promote_types(x.dtype, torch.float32)
        w = weight.t().to(acc).contiguous().unbind(0)  # w[k] [D] multiplies input t - (W-1) + k
        b = None if bias is None else bias.to(acc)
        T = max(1, min(L, _tile_len(N * D * acc.itemsize, W)))
        y = torch.empty((N, L, D), dtype=x.dtype, device=x.device)
        xbuf = x.new_empty((N, T + W - 1, D), dtype=acc)
        pre = x.new_empty((N, T, D), dtype=acc)
        direct = y.dtype == acc and not silu  # the taps can write y itself
        for t0 in range(0, L, T):
            t1 = min(t0 + T, L)
            n, out = t1 - t0, y[:, t0:t1]
            p = _taps(_rows(x, left, t0 - (W - 1), t1, xbuf), w, n, out if direct else pre[:, :n], b)
            if silu and y.dtype == acc:
                torch.ops.aten.silu.out(p, out=out)
            elif not direct:
                out.copy_(torch.nn.functional.silu(p, inplace=True) if silu else p)
        fctx.save_for_backward(x, weight, bias, left)
        fctx.silu = silu
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable  # out= ops into scratch: no double backward
    def backward(fctx, dy):
        """Tiles from the last to the first, so the W-1 rows of ``dpre`` right of a tile (which its ``dx`` needs)
        are the first rows of the previous step's ``dpre``: carried over, not recomputed."""
        x, weight, bias, left = fctx.saved_tensors
        need_dx, need_dw, need_db, need_dl = fctx.needs_input_grad[:4]
        N, L, D = x.shape
        W = weight.shape[1]
        acc = torch.promote_types(x.dtype, torch.float32)
        w = weight.t().to(acc).contiguous().unbind(0)
        wf = w[::-1]  # dx[t] = sum_k w[k] dpre[t + W-1 - k]
        b = None if bias is None else bias.to(acc)
        T = max(1, min(L, _tile_len(N * D * acc.itemsize, W)))
        xbuf, pre = x.new_empty((N, T + W - 1, D), dtype=acc), x.new_empty((N, T, D), dtype=acc)
        dpre = x.new_empty((2, N, T + W - 1, D), dtype=acc)  # ping-pong: [dpre of the tile | the W-1 rows after it]
        dpre[1][:, : W - 1].zero_()  # after the last tile: no outputs
        dx = torch.empty((N, L, D), dtype=x.dtype, device=x.device) if need_dx else None
        dw_acc = x.new_zeros((N, W, T, D), dtype=acc) if need_dw else None  # [.., k, i, ..]: dpre[i] * x[i-(W-1)+k]
        db_acc = x.new_zeros((N, T, D), dtype=acc) if need_db else None
        dleft = None
        for step, t0 in enumerate(reversed(range(0, L, T))):
            t1 = min(t0 + T, L)
            n = t1 - t0
            g, later = dpre[step % 2][:, : n + W - 1], dpre[(step + 1) % 2]
            g[:, n:].copy_(later[:, : W - 1])
            xs = _rows(x, left, t0 - (W - 1), t1, xbuf)  # n + W-1 rows from t0 - (W-1)
            if not fctx.silu or dy.dtype != acc:
                g[:, :n].copy_(dy[:, t0:t1])
            if fctx.silu:
                p = _taps(xs, w, n, pre[:, :n], b)
                dyt = dy[:, t0:t1] if dy.dtype == acc else g[:, :n]
                torch.ops.aten.silu_backward.grad_input(dyt, p, grad_input=g[:, :n])
            if need_dx:
                if dx.dtype == acc:
                    _taps(g, wf, n, dx[:, t0:t1])
                else:
                    dx[:, t0:t1].copy_(_taps(g, wf, n, pre[:, :n]))
            if need_dw:  # all W taps at once: window [N, n, D, W] -> [N, W, n, D]
                dw_acc[:, :, :n].addcmul_(xs.unfold(1, W, 1).permute(0, 3, 1, 2), g[:, None, :n])
            if need_db:
                db_acc[:, :n] += g[:, :n]
        if need_dl:  # the state's inputs s - (W-1), s < W-1, feed outputs 0 .. s: sum_k w[k] dpre[s - k]
            z = x.new_zeros((N, 2 * (W - 1), D), dtype=acc)
            if L:
                z[:, W - 1 :].copy_(g[:, : W - 1])  # dpre of outputs 0 .. W-2 (zeros past the end)
            dleft = _taps(z, wf, W - 1, torch.empty_like(z[:, : W - 1])).to(left.dtype)
        dweight = None if dw_acc is None else dw_acc.sum((0, 2)).t().to(weight.dtype)
        dbias = None if db_acc is None else db_acc.sum((0, 1)).to(bias.dtype)
        return dx, dweight, dbias, dleft, None


def causal_conv1d_torch(
    x, weight, bias=None, activation=None, initial_state=None, output_final_state=False, cu_seqlens=None
):
    """Validated arguments as :func:`sp_kernels.causal_conv1d`."""
    D, W = x.shape[2], weight.shape[1]
    seq = x if cu_seqlens is None else _varlen.pad(x[0], cu_seqlens)  # [N, L, D], zeros after each sequence
    N = seq.shape[0]
    silu = activation in ("silu", "swish")
    left = None if initial_state is None else initial_state.transpose(1, 2)  # [N, W-1, D]: inputs -(W-1) .. -1
    y = _CausalConv.apply(seq, weight, bias, left, silu)
    if cu_seqlens is not None:
        y = _varlen.unpad(y, cu_seqlens).unsqueeze(0)

    final = None
    if output_final_state:
        left = seq.new_zeros((N, W - 1, D)) if left is None else left
        if cu_seqlens is None:  # the last W-1 of [state | sequence]
            final = torch.cat([left, seq[:, max(0, seq.shape[1] - (W - 1)) :]], dim=1)[:, -(W - 1) :]
        else:  # the W-1 inputs ending at each sequence's last token: ctx[n, l_n : l_n + W-1]
            ctx = torch.cat([left, seq], dim=1)  # [N, W-1+L, D]: ctx[:, s] is input s-(W-1)
            lens = torch.tensor(_varlen.lengths(cu_seqlens), device=x.device)
            idx = lens.view(N, 1) + torch.arange(W - 1, device=x.device)
            final = ctx.gather(1, idx.view(N, W - 1, 1).expand(N, W - 1, D))
        final = final.transpose(1, 2).contiguous()
    return y, final


def forward_saving(x, weight, bias=None, activation=None, initial_state=None, output_final_state=False,
                   cu_seqlens=None):
    """:func:`causal_conv1d_torch` of an ordinary batch without autograd; its backward needs only the inputs."""
    if cu_seqlens is not None:
        raise ValueError("cu_seqlens: forward_saving takes ordinary batches")
    with torch.no_grad():
        return causal_conv1d_torch(x, weight, bias, activation, initial_state, output_final_state), []


def backward_saved(saved, grads, needs, x, weight, bias=None, activation=None, initial_state=None,
                   output_final_state=False, cu_seqlens=None):
    """``_CausalConv``'s backward, plus the final state's gradient (the last ``W - 1`` rows of ``[state | x]``)."""
    dy, dfinal = grads
    W = weight.shape[1]
    left = None if initial_state is None else initial_state.transpose(1, 2)
    need_x, need_w, need_b, need_state = needs[:4]
    if dy is None:
        dy = torch.zeros_like(x)
    dx, dweight, dbias, dleft, _ = function_backward(
        _CausalConv, (dy,), (x, weight, bias, left), (need_x, need_w, need_b, need_state and left is not None),
        silu=activation in ("silu", "swish"))
    if dfinal is not None and output_final_state and (need_x or need_state):
        N, L, D = x.shape
        d = torch.zeros(N, W - 1 + L, D, dtype=dfinal.dtype, device=x.device)  # over [state | x]
        d[:, -(W - 1):] = dfinal.transpose(1, 2)
        if need_x:
            dx = dx + d[:, W - 1:].to(dx.dtype)
        if need_state and left is not None:
            dleft = d[:, : W - 1].to(left.dtype) if dleft is None else dleft + d[:, : W - 1].to(dleft.dtype)
    dstate = None if dleft is None else dleft.transpose(1, 2)
    return [dx, dweight, dbias, dstate, None]
