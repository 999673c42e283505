"""Ascend Unified Buffer (UB) estimates of the Triton kernel launches an implementation would make on an NPU.

A Triton-Ascend kernel keeps its live tiles in the vector core's UB (192 KiB = 1572864 bits on 910B / A3). When
they do not fit, bishengir stops with ``ub overflow, requires N bits while 1572864 bits available!``; when they fit
only without double buffering it falls back to single buffering. The registry refuses an implementation one of whose
launches (:class:`Launch`) would not fit (:func:`check_launches`), e.g. flash-linear-attention's causal conv at the
shapes sequence parallelism produces — and then the torch conv1d is chosen.

This module knows no kernel by name. A model is data (``sp_kernels/dispatch/data/ub_models.json``; how each was fitted, and
against which compiler verdicts, is in ``sp_kernels/dispatch/data/UB_MODELS.md``) and one evaluator (:class:`UBModel`): per
element size (2: bf16 / fp16, 4: fp32; or per dtype where one differs from its size's) one or more *phases*, each a
sum of non-negative coefficients times products of the tile parameters (``{"BT*BD": 304, "BD": 384}``:
``304 BT BD + 384 BD`` bits) single-buffered, plus more terms double-buffered; the need is the largest phase. A parameter may have a minimum (UB rows are 32-byte aligned: a bf16
``BD=8`` row takes 16 columns). A model may instead be the worst of other models (``parts``: a launch of several
kernels). Each model states a safety ``margin`` (a tile fits when ``need * (1 + margin)`` fits) and lists its
``exceptions``: tiles where the compiler's verdict is known to differ from the linear form, answered by that verdict.

Each op declares the models of the kernels its implementations launch (``sp_kernels.dispatch.declare`` in the op's
``__init__``, which calls :func:`register`, reading the coefficients from the data file by name); :data:`MODELS`
then holds them. :data:`COUNTED` holds models of the same form counted from kernel sources (the
on-chip bytes the CUDA tile heuristics of our kernels keep within the shared memory per block), registered with
``register(..., counted=True)``.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import torch

from sp_kernels.dispatch.devices import DeviceProfile, known_profiles

DATA = Path(__file__).resolve().parent / "data" / "ub_models.json"
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_NAMES = {v: k for k, v in _DTYPES.items()}
FITS, FITS_SINGLE, OVERFLOW = "fits", "fits_single_buffered", "overflow"


def _elem_class(elem: int) -> int:
    return 4 if elem >= 4 else 2


def _key(key: str) -> int | str:
    """A data key: an element size ("2", "4") or a dtype name."""
    return int(key) if key.isdigit() else key


def _terms(name: str, where: str, terms: Mapping[str, float], params: tuple[str, ...]):
    """``{"BT*BD": 304, "1": 8192}`` -> ``((("BT", "BD"), 304.0), ((), 8192.0))``; checked."""
    out = []
    for term, coef in terms.items():
        factors = () if term == "1" else tuple(term.split("*"))
        unknown = [f for f in factors if f not in params]
        if unknown:
            raise ValueError(f"{name}: {where} term {term!r} uses {unknown}, not among the params {list(params)}")
        if isinstance(coef, bool) or not isinstance(coef, (int, float)) or not math.isfinite(coef):
            raise ValueError(f"{name}: {where} term {term!r}: expected a number, got {coef!r}")
        if coef < 0:
            raise ValueError(f"{name}: {where} term {term!r} has a negative coefficient ({coef}): a model states its "
                             "margin and lists its exceptions instead")
        out.append((factors, float(coef)))
    return tuple(out)


@dataclass(frozen=True)
class Phase:
    """One peak of a kernel: ``single`` bits single-buffered, ``double`` bits more when double-buffered."""

    single: tuple
    double: tuple

    @staticmethod
    def _sum(terms, tile) -> float:
        return sum(coef * math.prod(tile[f] for f in factors) for factors, coef in terms)

    def bits(self, tile: Mapping[str, int]) -> tuple[float, float]:
        single = self._sum(self.single, tile)
        return single, single + self._sum(self.double, tile)


@dataclass(frozen=True)
class UBException:
    """A tile whose compiler verdict the model's linear form does not reproduce: the model answers with it."""

    dtypes: tuple[str, ...]
    tile: Mapping[str, int]
    status: str
    why: str
    bits: int | None = None  # an overflow's reported need, where the linear form misstates it

    def matches(self, dtype: str, tile: Mapping[str, int]) -> bool:
        return dtype in self.dtypes and dict(self.tile) == dict(tile)


@dataclass(frozen=True)
class UBModel:
    """The evaluator: see the module docstring. ``phases`` and ``minimum`` are keyed by element size (2 or 4) or
    by dtype name (``"fp16"``), which takes precedence for that dtype."""

    name: str
    params: tuple[str, ...]
    phases: Mapping[int, tuple[Phase, ...]] = field(default_factory=dict)
    minimum: Mapping[int, Mapping[str, int]] = field(default_factory=dict)
    margin: float = 0.0
    exceptions: tuple[UBException, ...] = ()
    parts: tuple[str, ...] = ()
    source: str = ""
    #: dtypes whose coefficients follow the compiler's fits / overflow boundary rather than its reported need
    #: (bishengir's ``requires N`` is the need without code motion, which overstates the boundary for these)
    boundary: tuple[str, ...] = ()

    @classmethod
    def from_data(cls, name: str, data: Mapping) -> "UBModel":
        params = tuple(data.get("params", ()))
        if not params:
            raise ValueError(f"{name}: no params")
        if ("phases" in data) == ("parts" in data):
            raise ValueError(f"{name}: expected either phases or parts")
        margin = data.get("margin", 0.0)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 1:
            raise ValueError(f"{name}: margin: expected a fraction in [0, 1), got {margin!r}")
        phases = {}
        for key, rows in data.get("phases", {}).items():
            if key not in ("2", "4", *_DTYPES) or not rows:
                raise ValueError(f"{name}: phases: expected element sizes 2 and 4 (and optionally a dtype name, "
                                 f"e.g. fp16, where it differs from its size's), each with a phase; got {key!r}")
            phases[_key(key)] = tuple(
                Phase(_terms(name, f"phases[{key}] single", row.get("single", {}), params),
                      _terms(name, f"phases[{key}] double", row.get("double", {}), params)) for row in rows)
        if phases and not {2, 4} <= set(phases):
            raise ValueError(f"{name}: phases: expected element sizes 2 and 4, got {sorted(map(str, phases))}")
        exceptions = []
        for ex in data.get("exceptions", ()):
            if ex.get("status") not in (FITS, FITS_SINGLE, OVERFLOW):
                raise ValueError(f"{name}: exception status {ex.get('status')!r}")
            if set(ex["tile"]) != set(params) or not ex.get("why"):
                raise ValueError(f"{name}: an exception names every param ({list(params)}) and says why")
            if ex.get("bits") is not None and ex["status"] != OVERFLOW:
                raise ValueError(f"{name}: only an overflow exception carries the compiler's bits")
            exceptions.append(UBException(tuple(ex["dtypes"]), MappingProxyType(dict(ex["tile"])), ex["status"],
                                          ex["why"], ex.get("bits")))
        minimum = {_key(e): MappingProxyType(dict(m)) for e, m in data.get("min", {}).items()}
        return cls(name, params, MappingProxyType(phases), MappingProxyType(minimum), float(margin),
                   tuple(exceptions), tuple(data.get("parts", ())), data.get("source", ""),
                   tuple(data.get("boundary", ())))

    def bits(self, elem: int | str, **tile: int) -> tuple[int, int]:
        """``(single, double)``-buffered need in bits of a ``tile`` with ``elem``-byte elements, or of dtype ``elem``
        (``"bf16"``: its own phases where the model has them, else its size's), without the margin."""
        if self.parts:
            both = [_lookup(p, MODELS).bits(elem, **tile) for p in self.parts]
            return max(b[0] for b in both), max(b[1] for b in both)
        if isinstance(elem, str):
            cls = elem if elem in self.phases else _elem_class(_DTYPES[elem].itemsize)
            low = self.minimum.get(elem, self.minimum.get(_elem_class(_DTYPES[elem].itemsize), {}))
        else:
            cls = _elem_class(elem)
            low = self.minimum.get(cls, {})
        t = {k: max(v, low.get(k, v)) for k, v in tile.items()}
        peaks = [phase.bits(t) for phase in self.phases[cls]]
        return round(max(p[0] for p in peaks)), round(max(p[1] for p in peaks))

    def bytes(self, elem: int | str, **tile: int) -> tuple[int, int]:
        single, double = self.bits(elem, **tile)
        return -(-single // 8), -(-double // 8)

    def exception(self, dtype: str, tile: Mapping[str, int]) -> UBException | None:
        exceptions = self.exceptions
        if self.parts:
            exceptions = tuple(e for p in self.parts for e in _lookup(p, MODELS).exceptions)
        return next((e for e in exceptions if e.matches(dtype, tile)), None)


#: the registered UB models (name -> :class:`UBModel`), filled by :func:`register`
MODELS: dict[str, UBModel] = {}
#: the registered counted models (on-chip bytes for CUDA tile heuristics), same form
COUNTED: dict[str, UBModel] = {}


@functools.lru_cache(maxsize=None)
def load_data(path: str | None = None) -> Mapping:
    """The data file (default :data:`DATA`): ``{"models": {name: entry}, "counted": {name: entry}}``."""
    return json.loads(Path(path or DATA).read_text())


def register(*names: str, counted: bool = False, path: str | None = None) -> tuple[UBModel, ...]:
    """Register the models ``names`` from the data file (the kernel's owner calls this); returns them."""
    section = "counted" if counted else "models"
    entries = load_data(str(path) if path else None)[section]
    target = COUNTED if counted else MODELS
    out = []
    for name in names:
        if name not in entries:
            raise ValueError(f"name: no {section} entry for kernel {name!r} in {path or DATA}")
        target[name] = UBModel.from_data(name, entries[name])
        out.append(target[name])
    return tuple(out)


def register_model(model: UBModel, *, counted: bool = False) -> UBModel:
    """Register a model built in code (a test's stand-in, an experiment)."""
    (COUNTED if counted else MODELS)[model.name] = model
    return model


@dataclass(frozen=True)
class Launch:
    """One kernel launch an implementation would make: the UB model name, its tile parameters, its grid size, and
    an optional note (e.g. which configuration of an autotune set it stands for)."""

    kernel: str
    tile: Mapping[str, int]
    grid: int
    note: str = ""

    def __post_init__(self):
        object.__setattr__(self, "tile", MappingProxyType(dict(self.tile)))

    def describe(self) -> str:
        tile = ", ".join(f"{k}={v}" for k, v in self.tile.items())
        return f"{self.kernel}({tile}; grid {self.grid}{'; ' + self.note if self.note else ''})"


@dataclass(frozen=True)
class UBEstimate:
    kernel: str
    arch: str
    dtype: torch.dtype
    tile: Mapping[str, int] = field(repr=False)
    bits: int  # single-buffered need (the model's; no margin)
    double_buffered_bits: int
    limit_bits: int
    margin: float = 0.0
    exception: str = ""  # the compiler verdict a listed exception answers with, and why
    verdict: str | None = None

    @property
    def margin_bits(self) -> int:
        return math.ceil(self.bits * self.margin)

    @property
    def fits(self) -> bool:
        if self.verdict is not None:
            return self.verdict != OVERFLOW
        return self.bits + self.margin_bits <= self.limit_bits

    @property
    def fits_double_buffered(self) -> bool:
        if self.verdict is not None:
            return self.verdict == FITS
        return self.double_buffered_bits + math.ceil(self.double_buffered_bits * self.margin) <= self.limit_bits

    @property
    def status(self) -> str:
        if self.fits_double_buffered:
            return "fits"
        return "fits single-buffered" if self.fits else "overflow"

    def __str__(self) -> str:
        bits = self.double_buffered_bits if self.fits_double_buffered else self.bits
        text = f"{'fits' if self.fits else 'overflow'} {bits}/{self.limit_bits}" + (
            " (single-buffered)" if self.fits and not self.fits_double_buffered else "")
        if self.exception:
            return text + f" (listed exception: {self.exception})"
        if self.verdict is None and not self.fits and self.bits <= self.limit_bits:
            text += f" (within the model's {self.margin:.0%} margin)"
        return text


def kernels() -> list[str]:
    """The kernel names there is a UB model for."""
    return sorted(MODELS)


def _lookup(name: str, table: Mapping[str, UBModel]) -> UBModel:
    model = table.get(name)
    if model is None:
        raise ValueError(f"name: no UB model for kernel {name!r}; known: {', '.join(sorted(table)) or 'none'}")
    return model


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
    model = _lookup(name, MODELS)
    missing = [p for p in model.params if p not in tile]
    unknown = [p for p in tile if p not in model.params]
    if missing or unknown:
        raise ValueError(f"tile: {name} takes {', '.join(model.params)}; missing {missing}, unknown {unknown}")
    for key, value in tile.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}: expected a positive int, got {value!r}")
    profile = _profile(arch)
    dt = _dtype(dtype)
    single, double = model.bytes(_NAMES[dt], **tile)
    ex = model.exception(_NAMES[dt], tile)
    if ex is not None and ex.bits is not None:
        single, double = -(-ex.bits // 8), max(double, -(-ex.bits // 8))
    return UBEstimate(name, profile.name, dt, MappingProxyType(dict(tile)), single * 8, double * 8,
                      profile.ub_bytes * 8, model.margin,
                      exception=f"the compiler says {ex.status}: {ex.why}" if ex else "",
                      verdict=ex.status if ex else None)


def check_launches(launches, profile: DeviceProfile, dtype: torch.dtype) -> tuple[bool, str]:
    """``(False, reason with numbers)`` if a launch overflows the UB or the grid cap of ``profile``. A launch whose
    kernel has no registered model, on a device with a UB, is a ``LookupError``: a model not declared with its op."""
    for launch in launches:
        if profile.max_grid is not None and launch.grid > profile.max_grid:
            return False, f"{launch.describe()}: grid {launch.grid} > {profile.max_grid}"
        if profile.ub_bytes and launch.kernel not in MODELS:
            raise LookupError(f"{launch.kernel}: no Unified Buffer model is registered for this kernel; declare it "
                              "with its op (ub_models= of sp_kernels.dispatch.declare, in the op's __init__)")
        if profile.ub_bytes:
            est = estimate(launch.kernel, arch=profile, dtype=dtype if dtype in _DTYPES.values() else "fp32",
                           **launch.tile)
            if not est.fits:
                need = f"{est.bits} bits" + (f" (+{est.margin_bits} margin)" if est.bits <= est.limit_bits
                                             and not est.exception else "")
                return False, f"{launch.describe()} needs {need} of UB, {profile.name} has {est.limit_bits} (ub overflow)"
    return True, ""
