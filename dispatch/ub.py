"""Ascend Unified Buffer (UB) estimates for the Triton kernels the dispatcher may launch on an NPU.

A Triton-Ascend kernel keeps its live tiles in the vector core's UB (192 KiB = 1572864 bits on 910B / A3). When
they do not fit, bishengir stops with ``ub overflow, requires N bits while 1572864 bits available!``; when they fit
only without double buffering it falls back to single buffering. The selector uses these estimates to refuse a
kernel configuration that would not compile (``Implementation.launches``), e.g. flash-linear-attention's causal
conv at the shapes sequence parallelism produces — and then the torch conv1d is chosen.

Each :class:`TileModel` counts the kernel's live ``[BT, BD]`` tiles: ``io`` tiles in the input dtype
(double-buffered when the compiler multi-buffers the loads) and ``f32`` accumulator / temporary tiles. The models
of flash-linear-attention's causal conv kernels are :class:`FittedTileModel` s instead: calibrated against the real
compiler (bishengir from ``ascendnpu-ir`` 1.2.0, driven by ``triton-ascend`` 3.2.0 offline — see
``sp_kernels/compile_check/ascend.py``) on the configurations in ``dispatch/data/ub_table.json``, with which they agree
on every record (``tests/compile_check/test_ub_table.py``). So are the models of our own Triton kernels
(``ours.*``, calibration grid in ``sp_kernels/compile_check/ours_specs.py``); the counted models they replace remain in
:data:`COUNTED` for the CUDA tile heuristics. See :data:`MODELS` for each model's source.
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


@dataclass(frozen=True)
class FittedTileModel(TileModel):
    """A model fitted to the compiler: ``bits = a * BT * BD' + b * BD' + c * BT + d`` single-buffered, and
    ``+ m * BT * BD'`` more double-buffered, with ``(a, b, c, d, m)`` per element size (2: bf16/fp16, 4: fp32) in
    ``coef`` and ``BD' = max(BD, 32 / elem)`` (UB rows are 32-byte aligned: a bf16 BD=8 row takes 16 columns).

    ``a, b`` (``c = d = 0`` in every fit so far) come from the ``requires N bits`` that bishengir reports for the
    overflowing configurations of ``dispatch/data/ub_table.json`` (N is the single-buffered need: bishengir reports
    it after retrying without code motion and multi-buffering): the line through two of them that reproduces the most
    others exactly (59 of the table's 67 overflow records within 1%). Where only one overflow is known, ``b`` is the
    other dtype's scaled by the element size. Where N overstates the fits/overflow boundary (some kernels need more
    without code motion than the configurations that fit with it imply: legacy fwd / bwd_dx bf16, core-grid bwd
    varlen bf16), ``a`` is the middle of the interval the fits and overflows leave. ``m`` lies between the largest
    tile that compiled double-buffered and the smallest that compiled only single-buffered.
    ``parts``: a launch made of several kernels (the worst counts). A ``coef`` entry may also be a tuple of such
    rows: phases of one kernel whose peaks the compiler reports separately (the largest counts), e.g. our conv's
    ``[BT, BD]`` tile phase and its ``[BD]`` column phase (state columns, weights), which dominates only at very wide
    ``BD`` and small ``BT``. A row may carry a sixth coefficient ``n``: ``+ n * BD'`` more double-buffered.
    """

    coef: Mapping[int, tuple[float, float, float, float, float]] = field(default_factory=dict)
    parts: tuple[str, ...] = ()

    def bits(self, elem: int, BT: int, BD: int, **_) -> tuple[int, int]:
        if self.parts:
            both = [MODELS[p].bits(elem, BT=BT, BD=BD) for p in self.parts]
            return max(b[0] for b in both), max(b[1] for b in both)
        rows = self.coef[4 if elem >= 4 else 2]
        if not isinstance(rows[0], (tuple, list)):
            rows = (rows,)
        bd = max(BD, 32 // elem)
        single = [a * BT * bd + b * bd + c * BT + d for a, b, c, d, *_ in rows]
        double = [s + row[4] * BT * bd + (row[5] * bd if len(row) > 5 else 0) for s, row in zip(single, rows)]
        return round(max(single)), round(max(double))

    def bytes(self, elem: int, BT: int, BD: int, **_) -> tuple[int, int]:
        single, double = self.bits(elem, BT=BT, BD=BD)
        return -(-single // 8), -(-double // 8)


_BISHENGIR = ("fitted to bishengir (ascendnpu-ir 1.2.0 via triton-ascend 3.2.0, Ascend910B3), "
              "dispatch/data/ub_table.json")

#: flash-linear-attention 0.6's Triton-Ascend causal conv kernels (fla/modules/causal_conv1d/backends/triton_ascend.py)
#: in the training configuration (weight, no bias, silu, no initial/final state): name -> {elem: (a, b, c, d, m)}
#: in bits. ``.varlen`` = packed sequences (cu_seqlens); ``.tail`` = the core-grid backward's masked last T-chunk
#: (TAIL_MODE=1); fla launches it beside the bulk one (TAIL_MODE=0) on the packed path.
FLA_FITTED: dict[str, dict[int, tuple[float, float, float, float, float]]] = {
    "fla.causal_conv1d_bwd_coregrid": {2: (304, 384, 0, 0, 32), 4: (288, 672, 0, 0, 86)},
    "fla.causal_conv1d_bwd_coregrid.tail": {2: (272, 384, 0, 0, 32), 4: (288, 672, 0, 0, 86)},
    "fla.causal_conv1d_bwd_coregrid.varlen": {2: (279.6, 720, 0, 0, 32), 4: (384, 864, 0, 0, 64)},
    "fla.causal_conv1d_bwd_dwdb": {2: (1024, 0, 0, 0, 32), 4: (768, 256, 0, 0, 64)},
    "fla.causal_conv1d_bwd_dx": {2: (71.2, 64, 0, 0, 23), 4: (68.289, 128, 0, 0, 25)},
    "fla.causal_conv1d_fwd": {2: (71.2, 64, 0, 0, 23), 4: (68.305, 128, 0, 0, 25)},
    "fla.causal_conv1d_fwd_coregrid": {2: (80, 64, 0, 0, 32), 4: (96, 128, 0, 0, 64)},
    "fla.causal_conv1d_fwd_coregrid.varlen": {2: (80, 64, 0, 0, 32), 4: (96, 128, 0, 0, 64)},
}

MODELS: dict[str, TileModel] = {
    name: FittedTileModel(name, io=0, f32=0, extra_f32=0, source=_BISHENGIR, coef=coef)
    for name, coef in FLA_FITTED.items()
}
# fla 0.6's legacy backward is two launches at the tile dispatch.ub gets: dx, then dw (the worst one counts).
MODELS["fla.causal_conv1d_bwd"] = FittedTileModel(
    "fla.causal_conv1d_bwd", io=0, f32=0, extra_f32=0, source=_BISHENGIR + " (max of bwd_dx, bwd_dwdb)",
    parts=("fla.causal_conv1d_bwd_dx", "fla.causal_conv1d_bwd_dwdb"))


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


# --- our own portable Triton kernels (sp_kernels/*/triton_impl.py, sp_kernels/gated_delta_rule/fused_recurrent_triton.py)


@dataclass(frozen=True)
class StateTileModel(TileModel):
    """A recurrent kernel holding a ``[BK, BV]`` float32 state: ``bytes = BK * BV * f32 * 4`` (the state and its
    temporaries) ``+ (BK + BV) * (io * elem + extra_f32 * 4)`` (the per-token vectors); double buffering adds the
    ``io`` vectors again."""

    params: tuple[str, ...] = ("BK", "BV")

    def bytes(self, elem: int, BK: int, BV: int, **_) -> tuple[int, int]:  # type: ignore[override]
        single = int(BK * BV * self.f32 * 4 + (BK + BV) * (self.io * elem + self.extra_f32 * 4))
        return single, single + int((BK + BV) * self.io * elem)


@dataclass(frozen=True)
class FittedStateTileModel(StateTileModel):
    """:class:`StateTileModel`'s layout fitted to the compiler: ``bits = a * BK * BV + b * BK + c * BV + d``
    single-buffered and ``+ m * (BK + BV)`` more double-buffered (the per-token vectors), ``(a, b, c, d, m)`` per
    element size in ``coef``."""

    coef: Mapping[int, tuple[float, float, float, float, float]] = field(default_factory=dict)

    def bits(self, elem: int, BK: int, BV: int, **_) -> tuple[int, int]:
        a, b, c, d, m = self.coef[4 if elem >= 4 else 2]
        single = a * BK * BV + b * BK + c * BV + d
        return round(single), round(single + m * (BK + BV))

    def bytes(self, elem: int, BK: int, BV: int, **_) -> tuple[int, int]:  # type: ignore[override]
        single, double = self.bits(elem, BK=BK, BV=BV)
        return -(-single // 8), -(-double // 8)


@dataclass(frozen=True)
class FittedRotaryModel(FittedTileModel):
    """The rotary kernels' tiles: ``BT`` rows of two rotary halves (``BH`` columns each, float32 after the load, with
    ``cos`` / ``sin`` live across the heads) and a pass-through tail (``BP`` columns, copied in the input dtype).
    ``bits = a * BT * BH + b * BT * BP`` single-buffered, ``+ m * BT * BH + n * BT * BP`` more double-buffered, with
    ``(a, b, m, n)`` per element size in ``coef``. (One width ``BD = 2 BH + BP`` cannot describe it: the compiler
    fits ``BT=64`` at ``BH=32, BP=256`` but not at ``BH=128, BP=1``.)"""

    params: tuple[str, ...] = ("BT", "BH", "BP")

    def bits(self, elem: int, BT: int, BH: int = 1, BP: int = 1, **_) -> tuple[int, int]:  # type: ignore[override]
        a, b, m, n = self.coef[4 if elem >= 4 else 2]
        single = a * BT * BH + b * BT * BP
        return round(single), round(single + m * BT * BH + n * BT * BP)

    def bytes(self, elem: int, BT: int, BH: int = 1, BP: int = 1, **_) -> tuple[int, int]:  # type: ignore[override]
        single, double = self.bits(elem, BT=BT, BH=BH, BP=BP)
        return -(-single // 8), -(-double // 8)


#: Counted from the kernel sources: no longer the Unified Buffer models (the fitted ones below replace them in
#: MODELS), but the on-chip bytes the CUDA tile heuristics of our kernels keep within the shared memory per block.
COUNTED: dict[str, TileModel] = {
    m.name: m
    for m in (
        # sp_kernels/causal_conv1d/triton_impl.py, counted from the kernel source. Forward: io tiles x, initial-state
        # and y; f32 tiles acc, input, product and sigmoid; BD vectors bias + W weight columns.
        TileModel("ours.causal_conv1d_fwd", io=3, f32=4, extra_f32=8,
                  source="counted from sp_kernels/causal_conv1d/triton_impl.py"),
        # Backward: io tiles dy, x, initial-state, dfinal, dx, dh0; f32 tiles dx_acc, dz, dz0, z, sigmoid, input,
        # two products; BD vectors: dweight [BD, next_pow2(W)] + dbias + weight columns + bias.
        TileModel("ours.causal_conv1d_bwd", io=6, f32=8, extra_f32=16,
                  source="counted from sp_kernels/causal_conv1d/triton_impl.py"),
        # sp_kernels/rotary/triton_impl.py: BT rows x BD columns, BD = 2 * next_pow2(R/2) + next_pow2(D-R) (both
        # halves and the pass-through tail of one head). Forward io: x, cos, sin, out; f32: the same four.
        TileModel("ours.rotary_fwd", io=4, f32=4, extra_f32=0, params=("BT", "BD"),
                  source="counted from sp_kernels/rotary/triton_impl.py"),
        # Backward io: dy, x, cos, sin, dx; f32: those five + the dcos / dsin accumulators + a product.
        TileModel("ours.rotary_bwd", io=5, f32=8, extra_f32=0, params=("BT", "BD"),
                  source="counted from sp_kernels/rotary/triton_impl.py"),
        # sp_kernels/gated_delta_rule/fused_recurrent_triton.py: the [BK, BV] state + 3 state-sized temporaries
        # (h*k, k*delta, h*q); per token q, k (BK) and v, o (BV) vectors in io and f32.
        StateTileModel("ours.fused_recurrent_gated_delta_rule_fwd", io=4, f32=4, extra_f32=4,
                       source="counted from sp_kernels/gated_delta_rule/fused_recurrent_triton.py"),
    )
}

_OURS = _BISHENGIR + " (calibration grid of sp_kernels/compile_check/ours_specs.py)"

#: The conv backward's double buffering fails at BT=4, BD=64 though it works at BT=8, BD=32 and BT=2, BD=128 (bf16):
#: no one linear form separates them. This row never counts single-buffered (its BT term is negative) and catches that
#: corner double-buffered.
_CONV_BWD_QUIRK = (0, 0, -50000, 0, 7902, -3125)
#: our conv kernels (sp_kernels/causal_conv1d/triton_impl.py), the most demanding variant (bias, SiLU, initial state,
#: final state / its gradient): name -> {elem: row or rows (a, b, c, d, m[, n])} in bits, as FLA_FITTED.
#: Forward, the [BT, BD] phase: fp32, a from the requires-N of the overflows and b = 120 below them (BT=8, BD=1024
#: fits single-buffered); bf16, N = 208 BT BD + 160 BT overstates the boundary (every 8192-element tile with
#: BD <= 256 fits double-buffered, every 16384-element one overflows): a = 120 lies in the interval, and as BT=16,
#: BD=512 and BT=512, BD=16 fit only single-buffered, n = c = 512. The [BD] column phase: N = 1024 BD + ~320 BT at
#: BD >= 2048; double-buffering it fails at BT=2, BD=1024. Backward: about 4000 bits per tile element (W^2 recomputed
#: pre-activations): 256-element tiles fit, 512-element ones overflow (bf16: N within 1% at the long-BT tiles,
#: overstated up to 25% at the wide ones; fp32: the plane through the three overflows, exact on each).
OURS_CONV_FITTED: dict[str, dict] = {
    "ours.causal_conv1d_fwd": {2: ((120, 0, 512, 0, 48, 512), (0, 1024, 320, 0, 0, 1024)),
                               4: ((176, 120, 192, 0, 96), (0, 1024, 320, 0, 0, 1024))},
    "ours.causal_conv1d_bwd": {2: ((3900, 1000, 1500, 0, 0, 2000), _CONV_BWD_QUIRK),
                               4: ((6630, -1672, -40480, 0, 0, 4000), _CONV_BWD_QUIRK)},
}
#: our rotary kernels (sp_kernels/rotary/triton_impl.py): {elem: (a, b, m, n)} of :class:`FittedRotaryModel`. ``a`` is
#: exact (N = 512 BT BH backward, 256 / 272 forward); the tail's ``b`` and the double-buffering terms lie in the
#: intervals the fits, single-buffered fits and overflows leave.
OURS_ROTARY_FITTED: dict[str, dict[int, tuple[float, float, float, float]]] = {
    "ours.rotary_fwd": {2: (272, 4, 32, 4), 4: (256, 8, 160, 8)},
    "ours.rotary_bwd": {2: (512, 2, 128, 32), 4: (512, 2, 512, 16)},
}
#: our fused recurrent delta rule (sp_kernels/gated_delta_rule/fused_recurrent_triton.py, with initial / final state
#: and in-kernel l2norm): {elem: (a, b, c, d, m)} of :class:`FittedStateTileModel`, exact on the overflows of
#: BK x BV in {128 x 128, 256 x 64, 256 x 128}; no configuration was seen fitting only single-buffered (m: the
#: double-buffered q, k / v vectors).
OURS_STATE_FITTED: dict[str, dict[int, tuple[float, float, float, float, float]]] = {
    "ours.fused_recurrent_gated_delta_rule_fwd": {2: (128, 48, 32, 8192, 32), 4: (128, 64, 64, 0, 64)},
}

MODELS.update({name: FittedTileModel(name, io=0, f32=0, extra_f32=0, source=_OURS, coef=coef)
               for name, coef in OURS_CONV_FITTED.items()})
MODELS.update({name: FittedRotaryModel(name, io=0, f32=0, extra_f32=0, source=_OURS, coef=coef)
               for name, coef in OURS_ROTARY_FITTED.items()})
MODELS.update({name: FittedStateTileModel(name, io=0, f32=0, extra_f32=0, source=_OURS, coef=coef)
               for name, coef in OURS_STATE_FITTED.items()})
