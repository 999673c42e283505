"""The launcher of our Triton rotary embedding: forward and backward (an autograd Function), each running the
:class:`~sp_kernels.dispatch.ub.Launch` :func:`.triton_plan.plan` returns for the call — its tile and its grid."""
from __future__ import annotations

from typing import Mapping

import torch

from sp_kernels.dispatch.devices import detect
from sp_kernels.kernels.apply_rotary_pos_emb import triton_plan
from sp_kernels.kernels.apply_rotary_pos_emb.triton_kernels import rotary_bwd_kernel, rotary_fwd_kernel


def constexprs(tile: Mapping[str, int], D: int, R: int) -> dict:
    """Both kernels' ``tl.constexpr`` arguments for a launch's ``tile`` (``{"BT", "BH", "BP"}``)."""
    return dict(R=R, BT=tile["BT"], BH=tile["BH"], BP=tile["BP"], HAS_TAIL=D > R)


def _strides(x: torch.Tensor, unsqueeze_dim: int) -> tuple[int, int, int, int]:
    """``(heads, stride_b, stride_h, stride_t)`` of a contiguous ``x``."""
    if unsqueeze_dim == 1:
        return x.shape[1], x.stride(0), x.stride(1), x.stride(2)
    return x.shape[2], x.stride(0), x.stride(2), x.stride(1)


def _common(q, k, cos, unsqueeze_dim):
    B = q.shape[0]
    T = q.shape[2] if unsqueeze_dim == 1 else q.shape[1]
    D, R = q.shape[-1], cos.shape[-1]
    H, q_sb, q_sh, q_st = _strides(q, unsqueeze_dim)
    HK, k_sb, k_sh, k_st = _strides(k, unsqueeze_dim)
    cos_sb = 0 if cos.shape[0] == 1 else cos.stride(0)
    return B, T, D, R, (B, T, H, HK, D, q_sb, q_sh, q_st, k_sb, k_sh, k_st, cos_sb)


class RotaryFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, cos, sin, unsqueeze_dim, tile):
        B, T, D, R, args = _common(q, k, cos, unsqueeze_dim)
        out_dtype = torch.promote_types(q.dtype, cos.dtype)
        oq = torch.empty(q.shape, dtype=out_dtype, device=q.device)
        ok = torch.empty(k.shape, dtype=out_dtype, device=k.device)
        launch = triton_plan.plan(detect(q.device), B, T, D, R, q.dtype, tile=tile and tile.get("fwd"))
        if q.numel() or k.numel():
            rotary_fwd_kernel[(launch.grid,)](q, k, cos, sin, oq, ok, *args, **constexprs(launch.tile, D, R))
        ctx.save_for_backward(q, k, cos, sin)
        ctx.unsqueeze_dim = unsqueeze_dim
        ctx.tile = tile and tile.get("bwd")
        return oq, ok

    @staticmethod
    def backward(ctx, doq, dok):
        q, k, cos, sin = ctx.saved_tensors
        B, T, D, R, args = _common(q, k, cos, ctx.unsqueeze_dim)
        doq = torch.zeros(q.shape, dtype=cos.dtype, device=q.device) if doq is None else doq.contiguous()
        dok = torch.zeros(k.shape, dtype=cos.dtype, device=k.device) if dok is None else dok.contiguous()
        dq, dk = torch.empty_like(q), torch.empty_like(k)
        dcos = torch.zeros(B, T, R, dtype=torch.float32, device=q.device)
        dsin = torch.zeros(B, T, R, dtype=torch.float32, device=q.device)
        launch = triton_plan.plan(detect(q.device), B, T, D, R, q.dtype, backward=True, tile=ctx.tile)
        if q.numel() or k.numel():
            rotary_bwd_kernel[(launch.grid,)](q, k, cos, sin, doq, dok, dq, dk, dcos, dsin, *args,
                                              **constexprs(launch.tile, D, R))
        if cos.shape[0] == 1:
            dcos, dsin = dcos.sum(0, keepdim=True), dsin.sum(0, keepdim=True)
        return dq, dk, dcos.to(cos.dtype), dsin.to(sin.dtype), None, None


def rotary_triton(q, k, cos, sin, unsqueeze_dim=1, *, tile: dict | None = None):
    """Validated arguments as :func:`sp_kernels.apply_rotary_pos_emb`.

    ``tile`` (tests) overrides the choice: ``{"fwd": {"BT"[, "grid"]}, "bwd": {"BT"[, "grid"]}}``.
    """
    q, k, cos, sin = q.contiguous(), k.contiguous(), cos.contiguous(), sin.contiguous()
    return RotaryFunction.apply(q, k, cos, sin, unsqueeze_dim, tile)
