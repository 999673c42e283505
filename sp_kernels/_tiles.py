"""The tile policy of our Triton kernels, shared by every ``<op>/triton_plan.py`` (pure: no triton).

A plan lists its kernel's candidate tiles, best first, and :func:`choose_tile` keeps one:

- **NPU** (a profile with a Unified Buffer): the first candidate whose UB estimate (``sp_kernels/dispatch/ub.py``)
  fits double-buffered, else the first that fits at all; then :func:`fill_cores` halves it while it would leave
  vector cores idle;
- **CUDA** (any GPU): the first candidate within the register cap whose counted on-chip bytes (``ub.COUNTED``) fit
  the per-block shared memory;
- **CPU** (the Triton interpreter: tests): the plan's small tile, so that tails and masks are exercised.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from sp_kernels.dispatch.context import dtype_name
from sp_kernels.dispatch.devices import DeviceProfile
from sp_kernels.dispatch.ub import COUNTED, estimate

#: Triton's names of the dtypes our kernels take
DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
#: the length assumed when a context does not give one: a long sequence
UNKNOWN_T = 1 << 20


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def check_dtype(dtype: torch.dtype) -> tuple[bool, str]:
    """``supports``' dtype check: our kernels take bf16, fp16 and fp32."""
    if dtype not in DTYPE_NAMES:
        return False, f"Triton kernels take bf16/fp16/fp32, not {dtype_name(dtype)}"
    return True, ""


def model_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the UB / shared-memory models are asked about (any other dtype is costed as fp32)."""
    return dtype if dtype in DTYPE_NAMES else torch.float32


def grid(profile: DeviceProfile, items: int) -> int:
    """Programs for ``items`` work items: persistent on an NPU (one per vector core, each looping over items), a few
    on the CPU interpreter (so that the loop is exercised), one per item elsewhere; within the grid cap."""
    items = max(1, int(items))
    if profile.type == "npu":
        return min(items, profile.vector_cores or 1, profile.max_grid or items)
    if profile.type == "cpu":
        return min(items, 3)
    return min(items, profile.max_grid or items)


#: Per-block shared memory when a GPU profile does not state it: the 48 KiB every CUDA GPU since Fermi grants a
#: block without opting in to more.
DEFAULT_SHARED_MEMORY = 48 * 1024
#: Elements of a GPU tile held in registers: 4 warps (Triton's default ``num_warps``, which our launches keep: 128
#: threads) of 32 fp32 values each.
GPU_REGISTER_TILE = 4096
#: The largest tile (elements) a plan considers where no model bounds it more tightly: twice
#: :data:`GPU_REGISTER_TILE`. A bound on the search, not measured and not a device limit.
MAX_TILE_ELEMENTS = 2 * GPU_REGISTER_TILE


def choose_tile(profile: DeviceProfile, kernel: str, dtype: torch.dtype, candidates: Sequence[Mapping[str, int]], *,
                interpreter: Mapping[str, int], fallback: Mapping[str, int],
                gpu_candidates: Sequence[Mapping[str, int]] | None = None) -> dict:
    """The tile of ``kernel`` on ``profile`` (see the module's docstring): ``candidates`` are tiles (its UB / counted
    model's parameters), best first; ``gpu_candidates`` (default: ``candidates``) those a GPU may take (within
    :data:`GPU_REGISTER_TILE`); ``interpreter`` the CPU's tile; ``fallback`` where no candidate fits (the smallest
    tile: on an NPU the registry's launch check then rejects the implementation with the numbers)."""
    if profile.type == "cpu":
        return dict(interpreter)
    dt = model_dtype(dtype)
    if profile.type == "npu" and profile.ub_bytes:
        fits = [(est.fits_double_buffered, -i) for i, tile in enumerate(candidates)
                for est in [estimate(kernel, arch=profile, dtype=dt, **tile)] if est.fits]
        return dict(candidates[-max(fits)[1]]) if fits else dict(fallback)
    limit = profile.shared_memory_bytes or DEFAULT_SHARED_MEMORY
    for tile in candidates if gpu_candidates is None else gpu_candidates:
        if COUNTED[kernel].bytes(dt.itemsize, **tile)[0] <= limit:
            return dict(tile)
    return dict(fallback)


def fill_cores(profile: DeviceProfile, tile: dict, items: Callable[[Mapping[str, int]], int],
               halvings: Sequence[tuple[str, int]]) -> dict:
    """On an NPU (persistent grid: one program per vector core), halve ``tile`` while its ``items(tile)`` work items
    would leave vector cores idle: each step halves the first of ``halvings`` (``(parameter, floor)``) still above its
    floor. A smaller tile needs less of the Unified Buffer, so it still fits. Elsewhere ``tile`` is returned as is."""
    if profile.type != "npu":
        return tile
    cores = profile.vector_cores or 1
    while items(tile) < cores:
        name = next((name for name, floor in halvings if tile[name] > floor), None)
        if name is None:
            break
        tile[name] //= 2
    return tile


def forward_and_backward(ctx, plan: Callable, *shape) -> tuple:
    """The launches of a kernel pair for ``ctx``: ``plan(profile, *shape, dtype)``, and with ``backward=True`` when
    ``ctx`` needs grad."""
    out = [plan(ctx.device, *shape, ctx.dtype)]
    if ctx.requires_grad:
        out.append(plan(ctx.device, *shape, ctx.dtype, backward=True))
    return tuple(out)
