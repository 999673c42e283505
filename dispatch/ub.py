"""Ascend Unified Buffer (UB) estimates for the Triton kernels the dispatcher may launch on an NPU.

A Triton-Ascend kernel keeps its live tiles in the vector core's UB (192 KiB = 1572864 bits on 910B / A3). When
they do not fit, bishengir stops with ``ub overflow, requires N bits while 1572864 bits available!``; when they fit
only without double buffering it falls back to single buffering. The selector uses these estimates to refuse a
kernel configuration that would not compile (``Implementation.launches``), e.g. flash-linear-attention's causal
conv at the shapes sequence parallelism produces — and then the torch conv1d is chosen.

Each model counts the kernel's live ``[BT, BD]`` tiles: ``io`` tiles in the input dtype (double-buffered when the
compiler multi-buffers the loads) and ``f32`` accumulator / temporary tiles. See :data:`MODELS` for each model's
coefficients and where they come from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import torch

from dispatch.devices import DeviceProfile, known_profiles

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class TileModel:
    """``bytes = BT * BD * (io * elem + f32 * 4) + extra_f32 * BD * 4`` single-buffered; double buffering adds the
    ``io`` tiles again. ``source`` says where the coefficients come from."""

    name: str
    io: float
    f32: float
    extra_f32: int
    source: str
    params: tuple[str, ...] = ("BT", "BD", "W")

    def bytes(self, elem: int, BT: int, BD: int, **_) -> tuple[int, int]:
        single = int(BT * BD * (self.io * elem + self.f32 * 4) + self.extra_f32 * BD * 4)
        double = single + int(BT * BD * self.io * elem)
        return single, double


MODELS: dict[str, TileModel] = {
    m.name: m
    for m in (
        # flash-linear-attention 0.6 (fla/modules/causal_conv1d/backends/triton_ascend.py). Its own notes: the fp32
        # core-grid backward at BT=64, BD=64 needs ~200 KB ("fp32 live tiles overflow UB (200KB > 192KB)") while
        # bf16/fp16 fit; the forward keeps x, y, y_linear and two fp32 tiles live.
        TileModel("fla.causal_conv1d_fwd_coregrid", io=3, f32=2, extra_f32=8,
                  source="fitted to flash-linear-attention 0.6's notes; to be calibrated with bishengir"),
        TileModel("fla.causal_conv1d_bwd_coregrid", io=4, f32=8.5, extra_f32=8,
                  source="fitted to flash-linear-attention 0.6's notes (fp32 BT=64 BD=64: ~200 KB)"),
        TileModel("fla.causal_conv1d_fwd", io=2, f32=2, extra_f32=8,
                  source="flash-linear-attention 0.6 legacy path; counted from the kernel source"),
        TileModel("fla.causal_conv1d_bwd", io=3, f32=6, extra_f32=8,
                  source="flash-linear-attention 0.6 legacy path; counted from the kernel source"),
    )
}


@dataclass(frozen=True)
class Launch:
    """One kernel launch an implementation would make: the UB model name, its tile parameters, and its grid size."""

    kernel: str
    tile: Mapping[str, int]
    grid: int

    def __post_init__(self):
        object.__setattr__(self, "tile", MappingProxyType(dict(self.tile)))

    def describe(self) -> str:
        return f"{self.kernel}(" + ", ".join(f"{k}={v}" for k, v in self.tile.items()) + f"; grid {self.grid})"


@dataclass(frozen=True)
class UBEstimate:
    kernel: str
    arch: str
    dtype: torch.dtype
    tile: Mapping[str, int] = field(repr=False)
    bits: int  # single-buffered
    double_buffered_bits: int
    limit_bits: int

    @property
    def fits(self) -> bool:
        return self.bits <= self.limit_bits

    @property
    def fits_double_buffered(self) -> bool:
        return self.double_buffered_bits <= self.limit_bits

    @property
    def status(self) -> str:
        if self.fits_double_buffered:
            return "fits"
        return "fits single-buffered" if self.fits else "overflow"

    def __str__(self) -> str:
        bits = self.double_buffered_bits if self.fits_double_buffered else self.bits
        return f"{'fits' if self.fits else 'overflow'} {bits}/{self.limit_bits}" + (
            " (single-buffered)" if self.fits and not self.fits_double_buffered else "")


def kernels() -> list[str]:
    """The kernel names there is a UB model for."""
    return sorted(MODELS)


def _dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype: expected bf16, fp16 or fp32, got {dtype}")
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype: expected a torch dtype or one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def _profile(arch: str | DeviceProfile) -> DeviceProfile:
    if isinstance(arch, DeviceProfile):
        profile = arch
    else:
        profile = known_profiles().get(f"npu:{arch}")
        if profile is None:
            names = ", ".join(s[4:] for s in known_profiles() if s.startswith("npu:"))
            raise ValueError(f"arch: unknown Ascend arch {arch!r}; known: {names}")
    if not profile.ub_bytes:
        raise ValueError(f"arch: {profile.spec} has no Unified Buffer")
    return profile


def estimate(name: str, *, arch: str | DeviceProfile, dtype, **tile: int) -> UBEstimate:
    """UB use of kernel ``name`` with tile parameters ``tile`` (e.g. ``BT=64, BD=16, W=4``) on ``arch``."""
    model = MODELS.get(name)
    if model is None:
        raise ValueError(f"name: no UB model for kernel {name!r}; known: {', '.join(kernels())}")
    missing = [p for p in model.params if p not in tile]
    unknown = [p for p in tile if p not in model.params]
    if missing or unknown:
        raise ValueError(f"tile: {name} takes {', '.join(model.params)}; missing {missing}, unknown {unknown}")
    for key, value in tile.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}: expected a positive int, got {value!r}")
    profile = _profile(arch)
    dt = _dtype(dtype)
    single, double = model.bytes(dt.itemsize, **tile)
    return UBEstimate(name, profile.name, dt, tile, single * 8, double * 8, profile.ub_bytes * 8)


def check_launches(launches, profile: DeviceProfile, dtype: torch.dtype) -> tuple[bool, str]:
    """``(False, reason with numbers)`` if a launch overflows the UB or the grid cap of ``profile``."""
    for launch in launches:
        if profile.max_grid is not None and launch.grid > profile.max_grid:
            return False, f"{launch.describe()}: grid {launch.grid} > {profile.max_grid}"
        if launch.kernel in MODELS and profile.ub_bytes:
            est = estimate(launch.kernel, arch=profile, dtype=dtype if dtype in _DTYPES.values() else "fp32",
                           **launch.tile)
            if not est.fits:
                return False, (f"{launch.describe()} needs {est.bits} bits of UB, "
                               f"{profile.name} has {est.limit_bits} (ub overflow)")
    return True, ""
