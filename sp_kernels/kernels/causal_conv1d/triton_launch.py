"""The launcher of our Triton causal conv1d: forward and backward (an autograd Function), each running the
:class:`~sp_kernels.dispatch.ub.Launch` :func:`.triton_plan.plan` returns for the call — its tile and its grid."""
from __future__ import annotations

from typing import Mapping

import torch

from sp_kernels.dispatch.devices import detect
from sp_kernels.dispatch.ub import Launch
from sp_kernels._tiles import cdiv, next_pow2
from sp_kernels._varlen import sequences
from sp_kernels.kernels.causal_conv1d import triton_plan
from sp_kernels.kernels.causal_conv1d.triton_kernels import causal_conv1d_bwd_kernel, causal_conv1d_fwd_kernel


def fwd_constexprs(tile: Mapping[str, int], *, has_bias: bool, has_h0: bool, act: bool, store_final: bool) -> dict:
    """The forward kernel's ``tl.constexpr`` arguments for a launch's ``tile`` (``{"BT", "BD", "W"}``)."""
    W = tile["W"]
    return dict(W=W, BT=tile["BT"], BD=tile["BD"], HAS_BIAS=has_bias, HAS_H0=has_h0, ACT=act,
                STORE_FINAL=store_final, BW=next_pow2(max(W - 1, 1)))


def bwd_constexprs(tile: Mapping[str, int], *, has_bias: bool, has_h0: bool, act: bool, has_dfinal: bool) -> dict:
    """The backward kernel's ``tl.constexpr`` arguments for a launch's ``tile`` (``{"BT", "BD", "W"}``)."""
    W = tile["W"]
    return dict(W=W, BT=tile["BT"], BD=tile["BD"], HAS_BIAS=has_bias, HAS_H0=has_h0, ACT=act,
                HAS_DFINAL=has_dfinal, BW=next_pow2(W))


def _work_list(lens, BT: int, first: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tile_seq, tile_start)``: the sequence and first position of every time tile (positions from ``first``);
    as many as :func:`.triton_plan.time_tiles` counts."""
    seq, start = [], []
    for n, L in enumerate(lens):
        for i in range(max(1, cdiv(L - first, BT))):
            seq.append(n)
            start.append(first + i * BT)
    return (torch.tensor(seq, dtype=torch.int32, device=device),
            torch.tensor(start, dtype=torch.int32, device=device))


def _int32(values, device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int32, device=device)


def _forward(launch: Launch, x, weight, bias, h0, act, output_final_state, starts, lens):
    D, W = x.shape[2], weight.shape[1]
    tile_seq, tile_start = _work_list(lens, launch.tile["BT"], 0, x.device)
    y = torch.empty_like(x)
    final = x.new_empty(len(lens), D, W - 1) if output_final_state else None
    store_final = output_final_state and W > 1
    causal_conv1d_fwd_kernel[(launch.grid,)](
        x, weight, bias if bias is not None else x, h0 if h0 is not None else x, y,
        final if store_final else x, tile_seq, tile_start, _int32(starts, x.device), _int32(lens, x.device), D,
        tile_seq.numel(),
        **fwd_constexprs(launch.tile, has_bias=bias is not None, has_h0=h0 is not None and W > 1,
                         act=act == "silu", store_final=store_final),
    )
    return y, final


def _backward(launch: Launch, profile, tile, x, weight, bias, h0, act, dy, dfinal, starts, lens):
    D, W = x.shape[2], weight.shape[1]
    tile_seq, tile_start = _work_list(lens, launch.tile["BT"], -(W - 1), x.device)
    groups = triton_plan.backward_groups(profile, D, launch.tile["BD"], tile_seq.numel(), tile)
    dx = torch.empty_like(x)
    has_h0 = h0 is not None and W > 1
    dh0 = torch.zeros_like(h0) if h0 is not None else None
    dw_part = torch.empty(groups, D, W, dtype=torch.float32, device=x.device)
    db_part = torch.empty(groups, D, dtype=torch.float32, device=x.device) if bias is not None else None
    has_dfinal = dfinal is not None and W > 1
    causal_conv1d_bwd_kernel[(launch.grid,)](
        x, weight, bias if bias is not None else x, h0 if has_h0 else x, dy.contiguous(),
        dfinal.contiguous() if has_dfinal else x, dx, dh0 if has_h0 else x, dw_part,
        db_part if db_part is not None else dw_part, tile_seq, tile_start, _int32(starts, x.device),
        _int32(lens, x.device), D, tile_seq.numel(), groups,
        **bwd_constexprs(launch.tile, has_bias=bias is not None, has_h0=has_h0, act=act == "silu",
                         has_dfinal=has_dfinal),
    )
    dw = dw_part.sum(0).to(weight.dtype)
    db = db_part.sum(0).to(bias.dtype) if bias is not None else None
    return dx, dw, db, dh0


class CausalConv1dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, initial_state, activation, output_final_state, cu_seqlens, tile):
        (B, T, D), W = x.shape, weight.shape[1]
        starts, lens = sequences(B, T, cu_seqlens)
        profile = detect(x.device)
        launch = triton_plan.plan(profile, B, T, D, W, x.dtype, lengths=lens, tile=tile and tile.get("fwd"))
        y, final = _forward(launch, x, weight, bias, initial_state, activation, output_final_state, starts, lens)
        ctx.save_for_backward(x, weight, bias, initial_state)
        ctx.activation = activation
        ctx.sequences = starts, lens
        ctx.profile = profile
        ctx.tile = tile and tile.get("bwd")
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        x, weight, bias, h0 = ctx.saved_tensors
        (B, T, D), W = x.shape, weight.shape[1]
        starts, lens = ctx.sequences
        launch = triton_plan.plan(ctx.profile, B, T, D, W, x.dtype, backward=True, lengths=lens, tile=ctx.tile)
        dx, dw, db, dh0 = _backward(launch, ctx.profile, ctx.tile, x, weight, bias, h0, ctx.activation, dy, dfinal,
                                    starts, lens)
        return dx, dw, db, dh0, None, None, None, None


def causal_conv1d_triton(x, weight, bias=None, activation=None, initial_state=None, output_final_state=False,
                         cu_seqlens=None, *, tile: dict | None = None):
    """Validated arguments as :func:`sp_kernels.causal_conv1d`.

    ``tile`` (tests, experiments) overrides the choice: ``{"fwd": {"BT", "BD"[, "grid"]}, "bwd": {"BT", "BD"[,
    "grid", "groups"]}}``.
    """
    if activation == "swish":
        activation = "silu"
    x = x.contiguous()
    weight = weight.contiguous()
    bias = bias.contiguous() if bias is not None else None
    initial_state = initial_state.contiguous() if initial_state is not None else None
    y, final = CausalConv1dFunction.apply(x, weight, bias, initial_state, activation, output_final_state,
                                          cu_seqlens, tile)
    return y, final
