"""The tile plan of our Triton rotary embedding (pure: no triton): the :class:`~sp_kernels.dispatch.ub.Launch` es
:mod:`.triton_launch` makes, which the registry checks against the device before choosing it."""
from __future__ import annotations

from typing import Mapping

from sp_kernels.dispatch.context import Context
from sp_kernels.dispatch.devices import DeviceProfile
from sp_kernels.dispatch.ub import COUNTED, Launch, estimate
from sp_kernels._tiles import UNKNOWN_T, cdiv, check_dtype, grid, model_dtype, next_pow2

FWD = "ours.rotary_fwd"
BWD = "ours.rotary_bwd"


def columns(D: int, R: int) -> tuple[int, int]:
    """``(BH, BP)``: the half-rotary tile width and the pass-through tail tile width (1 when there is no tail)."""
    return next_pow2(max(R // 2, 1)), next_pow2(D - R) if D > R else 1


def tile_config(profile: DeviceProfile, T: int, D: int, R: int, dtype, *, backward: bool = False) -> dict:
    """``{"BT", "BD", "BH", "BP"}`` (pure). ``BD = 2 * BH + BP`` is one head's columns; the UB model takes ``BH`` and
    ``BP`` apart (the float32 rotary halves cost the Unified Buffer far more than the copied tail).

    ``BT`` is the largest power of two ``<= 64`` (and ``<= next_pow2(T)``) whose tile fits: on an NPU the Unified
    Buffer by the ``ours.rotary_fwd`` / ``_bwd`` model (double-buffered preferred); on CUDA at most 8192 elements
    and the model bytes within the per-block shared memory; on the CPU interpreter ``BT <= 16`` (tests exercise
    tails). :func:`plan` then halves an NPU's ``BT`` while fewer work items than vector cores would leave cores idle.
    """
    T = max(int(T), 1)
    BH, BP = columns(D, R)
    BD = 2 * BH + BP
    kernel = BWD if backward else FWD
    dt = model_dtype(dtype)
    bts = [b for b in (64, 32, 16, 8, 4, 2, 1) if b <= next_pow2(T)]
    if profile.type == "cpu":
        BT = min(16, bts[0])
    elif profile.type == "npu" and profile.ub_bytes:
        fits = [(est.fits_double_buffered, bt) for bt in bts
                for est in [estimate(kernel, arch=profile, dtype=dt, BT=bt, BH=BH, BP=BP)] if est.fits]
        BT = max(fits)[1] if fits else 1
    else:
        limit = profile.shared_memory_bytes or 48 * 1024
        ok = [bt for bt in bts
              if bt * BD <= 8192 and COUNTED[kernel].bytes(dt.itemsize, BT=bt, BD=BD)[0] <= limit]
        BT = ok[0] if ok else 1
    return {"BT": BT, "BD": BD, "BH": BH, "BP": BP}


def plan(profile: DeviceProfile, B: int, T: int, D: int, R: int, dtype, backward: bool = False,
         tile: Mapping | None = None) -> Launch:
    """The launch (kernel, ``{"BT", "BH", "BP"}``, grid) for ``B`` rows of ``T`` positions, heads of ``D`` dims of
    which ``R`` rotate. ``tile`` (tests) replaces the choice: ``{"BT"[, "grid"]}``."""
    BH, BP = columns(D, R)
    if tile:
        BT = tile["BT"]
    else:
        BT = tile_config(profile, T, D, R, dtype, backward=backward)["BT"]
        if profile.type == "npu":
            cores = profile.vector_cores or 1
            while B * cdiv(T, BT) < cores and BT > 1:
                BT //= 2
    programs = (tile or {}).get("grid") or grid(profile, B * cdiv(max(T, 1), BT))
    return Launch(BWD if backward else FWD, {"BT": BT, "BH": BH, "BP": BP}, programs)


def launches(ctx: Context) -> tuple[Launch, ...]:
    """What :func:`.triton_launch.rotary_triton` launches for ``ctx`` (forward; backward too when grad is needed)."""
    s = ctx.shapes
    B, T, D, R = s.get("B", 1), s.get("T", UNKNOWN_T), s["D"], s.get("R", s["D"])
    out = [plan(ctx.device, B, T, D, R, ctx.dtype)]
    if ctx.requires_grad:
        out.append(plan(ctx.device, B, T, D, R, ctx.dtype, backward=True))
    return tuple(out)


def supports(ctx: Context) -> tuple[bool, str]:
    return check_dtype(ctx.dtype)
