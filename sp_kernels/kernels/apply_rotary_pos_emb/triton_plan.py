"""The tile plan of our Triton rotary embedding (pure: no triton): the :class:`~sp_kernels.dispatch.ub.Launch` es
:mod:`.triton_launch` makes, which the registry checks against the device before choosing it."""
from __future__ import annotations

from typing import Mapping

from sp_kernels.dispatch.context import Context
from sp_kernels.dispatch.devices import DeviceProfile
from sp_kernels.dispatch.ub import Launch
from sp_kernels._tiles import (MAX_TILE_ELEMENTS, UNKNOWN_T, cdiv, check_dtype, choose_tile, fill_cores,
                               forward_and_backward, grid, next_pow2)

FWD = "ours.rotary_fwd"
BWD = "ours.rotary_bwd"
#: the kernels this plan launches (their models are declared with the op)
KERNELS = (FWD, BWD)


def columns(D: int, R: int) -> tuple[int, int]:
    """``(BH, BP)``: the half-rotary tile width and the pass-through tail tile width (1 when there is no tail)."""
    return next_pow2(max(R // 2, 1)), next_pow2(D - R) if D > R else 1


def tile_config(profile: DeviceProfile, T: int, D: int, R: int, dtype, *, backward: bool = False) -> dict:
    """``{"BT", "BD", "BH", "BP"}`` (pure; the policy: :func:`sp_kernels._tiles.choose_tile`). ``BD = 2 * BH + BP``
    is one head's columns; the UB model takes ``BH`` and ``BP`` apart (the float32 rotary halves cost the Unified
    Buffer far more than the copied tail).

    ``BT``: the largest power of two ``<= 64`` (and ``<= next_pow2(T)``) that fits; a GPU's tile has at most
    ``MAX_TILE_ELEMENTS``; the interpreter's ``BT <= 16``. :func:`plan` then halves an NPU's ``BT`` while fewer work
    items than vector cores would leave cores idle.
    """
    T = max(int(T), 1)
    BH, BP = columns(D, R)
    BD = 2 * BH + BP
    tiles = [{"BT": bt, "BH": BH, "BP": BP} for bt in (64, 32, 16, 8, 4, 2, 1) if bt <= next_pow2(T)]
    tile = choose_tile(profile, BWD if backward else FWD, dtype, tiles,
                       gpu_candidates=[{"BT": t["BT"], "BD": BD} for t in tiles if t["BT"] * BD <= MAX_TILE_ELEMENTS],
                       interpreter={"BT": min(16, tiles[0]["BT"]), "BH": BH, "BP": BP},
                       fallback={"BT": 1, "BH": BH, "BP": BP})
    return {"BT": tile["BT"], "BD": BD, "BH": BH, "BP": BP}


def plan(profile: DeviceProfile, B: int, T: int, D: int, R: int, dtype, backward: bool = False,
         tile: Mapping | None = None) -> Launch:
    """The launch (kernel, ``{"BT", "BH", "BP"}``, grid) for ``B`` rows of ``T`` positions, heads of ``D`` dims of
    which ``R`` rotate. ``tile`` (tests) replaces the choice: ``{"BT"[, "grid"]}``."""
    BH, BP = columns(D, R)
    if tile:
        cfg = {"BT": tile["BT"], "BH": BH, "BP": BP}
    else:
        cfg = {"BT": tile_config(profile, T, D, R, dtype, backward=backward)["BT"], "BH": BH, "BP": BP}
        cfg = fill_cores(profile, cfg, lambda t: B * cdiv(T, t["BT"]), (("BT", 1),))
    programs = (tile or {}).get("grid") or grid(profile, B * cdiv(max(T, 1), cfg["BT"]))
    return Launch(BWD if backward else FWD, cfg, programs)


def launches(ctx: Context) -> tuple[Launch, ...]:
    """What :func:`.triton_launch.rotary_triton` launches for ``ctx`` (forward; backward too when grad is needed)."""
    s = ctx.shapes
    return forward_and_backward(ctx, plan, s.get("B", 1), s.get("T", UNKNOWN_T), s["D"], s.get("R", s["D"]))


def supports(ctx: Context) -> tuple[bool, str]:
    return check_dtype(ctx.dtype)
