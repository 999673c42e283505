"""The tile plan of our Triton fused recurrent gated delta rule (pure: no triton): the one
:class:`~sp_kernels.dispatch.ub.Launch` :mod:`.triton_launch` makes, which the registry checks against the device before
choosing it.

There is no backward: :func:`supports` rejects contexts that need grad and long sequences (the chunked form is
the right algorithm there).
"""
from __future__ import annotations

from typing import Mapping

from sp_kernels.dispatch.context import Context
from sp_kernels.dispatch.devices import DeviceProfile
from sp_kernels.dispatch.ub import Launch
from sp_kernels._tiles import GPU_REGISTER_TILE, cdiv, check_dtype, choose_tile, fill_cores, grid, next_pow2

KERNEL = "ours.fused_recurrent_gated_delta_rule_fwd"
#: the kernels this plan launches (their models are declared with the op)
KERNELS = (KERNEL,)
#: the longest sequence this form is chosen for; longer ones belong to the chunked form
MAX_T = 64
MAX_K = 256


def tile_config(profile: DeviceProfile, K: int, V: int, dtype, items: int | None = None) -> dict:
    """``{"BK", "BV"}`` (pure; the policy: :func:`sp_kernels._tiles.choose_tile`). ``BK = next_pow2(K)`` (the whole
    key dim: the state update needs it); ``BV`` the largest power of two ``<= min(128, next_pow2(V))`` that fits (a
    GPU's ``[BK, BV]`` state tile within ``GPU_REGISTER_TILE``), then on an NPU halved (down to 16) while ``items``
    (sequences x value heads) x value tiles would leave vector cores idle. The interpreter's ``BV <= 16``, so that
    value tiling is exercised.
    """
    BK = next_pow2(max(K, 1))
    top = min(128, next_pow2(max(V, 1)))
    tiles = [{"BK": BK, "BV": bv} for bv in (128, 64, 32, 16, 8, 4, 2, 1) if bv <= top]
    tile = choose_tile(profile, KERNEL, dtype, tiles,
                       gpu_candidates=[t for t in tiles if BK * t["BV"] <= GPU_REGISTER_TILE],
                       interpreter={"BK": BK, "BV": min(16, top)}, fallback={"BK": BK, "BV": 1})
    if items is None:
        return tile
    return fill_cores(profile, tile, lambda t: items * cdiv(V, t["BV"]), (("BV", 16),))


def plan(profile: DeviceProfile, N: int, HV: int, K: int, V: int, dtype, tile: Mapping | None = None) -> Launch:
    """The launch for ``N`` sequences of ``HV`` value heads. ``tile`` (tests) replaces the choice:
    ``{"BV"[, "grid"]}``."""
    cfg = {"BK": next_pow2(max(K, 1)), "BV": tile["BV"]} if tile else tile_config(profile, K, V, dtype, items=N * HV)
    programs = (tile or {}).get("grid") or grid(profile, N * HV * cdiv(V, cfg["BV"]))
    return Launch(KERNEL, cfg, programs)


def launches(ctx: Context) -> tuple[Launch, ...]:
    """The one forward launch (``N`` is ``B``, or at most ``T`` packed sequences)."""
    s = ctx.shapes
    N = s.get("T", MAX_T) if ctx.packed else s.get("B", 1)
    return (plan(ctx.device, max(N, 1), s.get("HV", s.get("H", 1)), s["K"], s["V"], ctx.dtype),)


def supports(ctx: Context) -> tuple[bool, str]:
    if ctx.requires_grad:
        return False, "forward only (no backward kernel): training uses the chunked form"
    T = ctx.shapes.get("T")
    if T is None or T > MAX_T:
        return False, f"T={T} > {MAX_T}: use the chunked form for long sequences"
    ok, why = check_dtype(ctx.dtype)
    if not ok:
        return ok, why
    if ctx.shapes.get("K", 0) > MAX_K:
        return False, f"K={ctx.shapes['K']} > {MAX_K}: the [K, BV] state tile would not fit"
    return True, ""
