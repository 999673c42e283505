"""The tile plan of our Triton causal conv1d (pure: no triton): the :class:`~sp_kernels.dispatch.ub.Launch` es
:mod:`.triton_launch` makes, which the registry checks against the device before choosing it.

Tiles ``(BT, BD)`` are a pure function of the device profile and the shapes (no autotuning); the grid is
persistent on an NPU (one program per vector core, each looping over work items), one program per item elsewhere.
"""
from __future__ import annotations

from typing import Mapping

from sp_kernels.dispatch.context import Context
from sp_kernels.dispatch.devices import DeviceProfile
from sp_kernels.dispatch.ub import Launch
from sp_kernels._tiles import (GPU_REGISTER_TILE, MAX_TILE_ELEMENTS, UNKNOWN_T, cdiv, check_dtype, choose_tile,
                               fill_cores, forward_and_backward, grid, next_pow2)

FWD = "ours.causal_conv1d_fwd"
BWD = "ours.causal_conv1d_bwd"
#: the kernels this plan launches (their models are declared with the op)
KERNELS = (FWD, BWD)


def tile_config(profile: DeviceProfile, T: int, D: int, W: int, dtype, *, backward: bool = False) -> dict:
    """``{"BT", "BD", "W"}`` for ``[*, T, D]`` inputs on ``profile`` (pure; no autotuning; the policy:
    :func:`sp_kernels._tiles.choose_tile`).

    Candidates: ``BD`` a power of two in ``[16, 256]`` (at most ``next_pow2(D)``), ``BT`` in ``[1, 64]`` (at most
    ``next_pow2(T)``), at most ``MAX_TILE_ELEMENTS``; the larger tile first, then the wider ``BD`` (contiguous
    rows). A GPU takes ``BD <= 128`` and ``GPU_REGISTER_TILE`` elements at most. On an NPU ``BD`` (down to 32),
    then ``BT`` (down to 8), are halved while vector cores would be idle. The interpreter's tile is ``BT=16,
    BD=32`` (or smaller).
    """
    T, D, W = max(int(T), 1), max(int(D), 1), int(W)
    if backward:
        T = T + W - 1  # extended positions
    max_bt = min(64, next_pow2(T))
    max_bd = max(16, min(256, next_pow2(D)))
    tiles = sorted(({"BT": bt, "BD": bd, "W": W} for bt in (64, 32, 16, 8, 4, 2, 1) if bt <= max_bt
                    for bd in (256, 128, 64, 32, 16) if bd <= max_bd and bt * bd <= MAX_TILE_ELEMENTS),
                   key=lambda t: (t["BT"] * t["BD"], t["BD"], t["BT"]), reverse=True)
    tile = choose_tile(profile, BWD if backward else FWD, dtype, tiles,
                       gpu_candidates=[t for t in tiles if t["BD"] <= 128 and t["BT"] * t["BD"] <= GPU_REGISTER_TILE],
                       interpreter={"BT": min(16, max_bt), "BD": min(32, max_bd), "W": W},
                       fallback={"BT": 1, "BD": 16, "W": W})
    return fill_cores(profile, tile, lambda t: cdiv(D, t["BD"]) * cdiv(T, t["BT"]), (("BD", 32), ("BT", 8)))


def time_tiles(lengths, BT: int, backward: bool = False, W: int = 1) -> int:
    """How many ``BT`` time tiles the sequences of ``lengths`` have (at least one each; the backward's cover the
    extended positions ``[-(W-1), L)``)."""
    ext = W - 1 if backward else 0
    return sum(max(1, cdiv(length + ext, BT)) for length in lengths)


def backward_groups(profile: DeviceProfile, D: int, BD: int, n_tiles: int,
                    tile: Mapping | None = None) -> int:
    """Time-tile groups of the backward (its partial dweight rows); ``tile["groups"]`` overrides."""
    if tile and tile.get("groups"):
        return tile["groups"]
    n_d = cdiv(D, BD)
    if profile.type == "npu":
        want = cdiv(profile.vector_cores or 1, n_d)
    elif profile.type == "cpu":
        want = 2
    else:
        want = cdiv(1024, n_d)
    return max(1, min(n_tiles, want, 256))


def plan(profile: DeviceProfile, B: int, T: int, D: int, W: int, dtype, backward: bool = False,
         lengths=None, tile: Mapping | None = None) -> Launch:
    """The launch (kernel, tile, grid) for a ``[B, T, D]`` batch (``lengths``: packed sequence lengths).

    ``tile`` (tests, experiments) replaces the choice: ``{"BT", "BD"[, "grid"][, "groups"]}``."""
    lengths = [T] * B if lengths is None else list(lengths)
    cfg = tile_config(profile, T, D, W, dtype, backward=backward) if not tile else \
        {"BT": tile["BT"], "BD": tile["BD"], "W": W}
    n_tiles = time_tiles(lengths, cfg["BT"], backward, W)
    per_d = backward_groups(profile, D, cfg["BD"], n_tiles, tile) if backward else n_tiles
    programs = (tile or {}).get("grid") or grid(profile, cdiv(D, cfg["BD"]) * per_d)
    return Launch(BWD if backward else FWD, cfg, programs)


def launches(ctx: Context) -> tuple[Launch, ...]:
    """What :func:`.triton_launch.causal_conv1d_triton` launches for ``ctx`` (forward; backward too when grad is
    needed)."""
    s = ctx.shapes
    return forward_and_backward(ctx, plan, s.get("B", 1), s.get("T", UNKNOWN_T), s["D"], s["W"])


def supports(ctx: Context) -> tuple[bool, str]:
    return check_dtype(ctx.dtype)
