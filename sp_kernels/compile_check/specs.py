"""What to compile: one :class:`CompileSpec` per (kernel, tile configuration, dtype) the dispatcher can choose."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class CompileSpec:
    """One kernel configuration, in a form both compilers' harnesses take.

    ``kernel`` names it in the UB table and models (``dispatch.ub``), e.g. ``"ours.causal_conv1d_fwd"`` or
    ``"fla.causal_conv1d_bwd_coregrid"``; ``module``/``function`` locate the ``@triton.jit`` function (decorators
    such as ``triton.heuristics`` / ``autotune`` are unwrapped to it); ``signature`` maps every non-constexpr
    argument to a Triton type string (``"*bf16"``, ``"*fp32"``, ``"i32"``, ``"i64"``); ``constexprs`` gives every
    ``tl.constexpr`` argument its value; ``tile`` holds the UB-model parameters (``BT``, ``BD``, ``W``, ...).
    """

    kernel: str
    module: str
    function: str
    signature: Mapping[str, str]
    constexprs: Mapping[str, object]
    dtype: str
    tile: Mapping[str, int]
    note: str = field(default="", compare=False)

    def __post_init__(self):
        for name in ("signature", "constexprs", "tile"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def key(self) -> str:
        """Stable id: ``kernel[BT=64,BD=16,W=4]:bf16``."""
        return f"{self.kernel}[" + ",".join(f"{k}={v}" for k, v in sorted(self.tile.items())) + f"]:{self.dtype}"

    def to_json(self) -> dict:
        return {"kernel": self.kernel, "module": self.module, "function": self.function,
                "signature": dict(self.signature), "constexprs": dict(self.constexprs), "dtype": self.dtype,
                "tile": dict(self.tile), "note": self.note}

    @classmethod
    def from_json(cls, data: dict) -> "CompileSpec":
        return cls(**data)
