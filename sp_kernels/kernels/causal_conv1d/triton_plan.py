"""The tile plan of our Triton causal conv1d (pure: no triton): the :class:`~sp_kernels.dispatch.ub.Launch` es
:mod:`.triton_launch` makes, which the registry checks against the device before choosing it.

Tiles ``(BT, BD)`` are a pure function of the device profile and the shapes (no autotuning); the grid is
persistent on an NPU (one program per vector core, each looping over work items), one program per item elsewhere.
"""
from __future__ import annotations

from typing import Mapping

from sp_kernels.dispatch.context import Context
from sp_kernels.dispatch.devices import DeviceProfile
from sp_kernels.dispatch.ub import COUNTED, Launch, estimate
from sp_kernels._tiles import UNKNOWN_T, cdiv, check_dtype, grid, model_dtype, next_pow2

FWD = "ours.causal_conv1d_fwd"
BWD = "ours.causal_conv1d_bwd"


def tile_config(profile: DeviceProfile, T: int, D: int, W: int, dtype, *, backward: bool = False) -> dict:
    """``{"BT", "BD", "W"}`` for ``[*, T, D]`` inputs on ``profile`` (pure; no autotuning).

    Candidates: ``BD`` a power of two in ``[16, 256]`` (at most ``next_pow2(D)``), ``BT`` in ``[1, 64]`` (at most
    ``next_pow2(T)``), at most 8192 elements a tile.

    * NPU: the tile must fit the Unified Buffer by the ``ours.causal_conv1d_fwd`` / ``_bwd`` model; tiles that fit
      double-buffered are preferred, then the larger tile, then the wider ``BD`` (contiguous rows). If the tile
      leaves vector cores idle (fewer work items than cores), ``BD`` then ``BT`` are halved while that helps.
    * CUDA: the largest tile (``BT <= 64``, ``BD <= 128``, <= 4096 elements: register tiles at 4 warps) whose
      model bytes fit the per-block shared memory.
    * CPU (the Triton interpreter, tests): small tiles ``BT=16, BD=32`` that exercise tails and masks.
    """
    T, D, W = max(int(T), 1), max(int(D), 1), int(W)
    kernel = BWD if backward else FWD
    if backward:
        T = T + W - 1  # extended positions
    max_bt = min(64, next_pow2(T))
    max_bd = max(16, min(256, next_pow2(D)))
    if profile.type == "cpu":
        return {"BT": min(16, max_bt), "BD": min(32, max_bd), "W": W}
    bts = [b for b in (64, 32, 16, 8, 4, 2, 1) if b <= max_bt]
    bds = [b for b in (256, 128, 64, 32, 16) if b <= max_bd]
    dt = model_dtype(dtype)
    if profile.type == "npu" and profile.ub_bytes:
        scored = []
        for bt in bts:
            for bd in bds:
                if bt * bd > 8192:
                    continue
                est = estimate(kernel, arch=profile, dtype=dt, BT=bt, BD=bd, W=W)
                if est.fits:
                    scored.append((est.fits_double_buffered, bt * bd, bd, bt))
        if not scored:
            return {"BT": 1, "BD": 16, "W": W}
        scored.sort(reverse=True)
        _, _, bd, bt = scored[0]
        cores = profile.vector_cores or 1
        while cdiv(D, bd) * cdiv(T, bt) < cores:
            if bd > 32:
                bd //= 2
            elif bt > 8:
                bt //= 2
            else:
                break
        return {"BT": bt, "BD": bd, "W": W}
    # cuda (and any other GPU)
    limit = profile.shared_memory_bytes or 48 * 1024
    best = None
    for bt in bts:
        for bd in bds:
            if bd > 128 or bt * bd > 4096:
                continue
            single, _ = COUNTED[kernel].bytes(dt.itemsize, BT=bt, BD=bd, W=W)
            if single <= limit:
                key = (bt * bd, bd, bt)
                best = key if best is None or key > best else best
    _, bd, bt = best or (0, 16, 1)
    return {"BT": bt, "BD": bd, "W": W}


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
    B, T, D, W = s.get("B", 1), s.get("T", UNKNOWN_T), s["D"], s["W"]
    out = [plan(ctx.device, B, T, D, W, ctx.dtype)]
    if ctx.requires_grad:
        out.append(plan(ctx.device, B, T, D, W, ctx.dtype, backward=True))
    return tuple(out)


def supports(ctx: Context) -> tuple[bool, str]:
    return check_dtype(ctx.dtype)
