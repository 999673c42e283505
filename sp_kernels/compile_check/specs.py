"""What to compile: one :class:`CompileSpec` per (kernel, tile configuration, dtype) the dispatcher can choose."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class CompileSpec:
    """One kernel configuration, in a form both compilers' harnesses take.

    ``kernel`` names it in the UB table and models (``sp_kernels.dispatch.ub``), e.g. ``"ours.causal_conv1d_fwd"`` or
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


def kernel_spec(kernel: str, fn, dtype: str, constexprs: Mapping[str, object], tile: Mapping[str, int], *,
                types: Mapping[str, str], note: str = "") -> CompileSpec:
    """The spec of the ``@triton.jit`` function ``fn`` for ``dtype``, its arguments read from the kernel: every
    ``tl.constexpr`` takes its value from ``constexprs``, every other argument its type from ``types`` or, by
    default, is a pointer to ``dtype`` (``*bf16``). A name the kernel does not have, or a constexpr without a
    value, is an error (the kernel changed; its spec must too)."""
    params = {p.name: p.is_constexpr for p in fn.params}
    problems = [f"{what} {names}" for what, names in (
        ("no argument", sorted((set(constexprs) | set(types)) - set(params))),
        ("no value for the constexpr", [n for n, c in params.items() if c and n not in constexprs]),
        ("a value for the argument (not a constexpr)", [n for n in constexprs if n in params and not params[n]]),
    ) if names]
    if problems:
        raise ValueError(f"{kernel}: {fn.fn.__name__} has " + "; ".join(problems))
    signature = {n: types.get(n, f"*{dtype}") for n, is_constexpr in params.items() if not is_constexpr}
    return CompileSpec(kernel, fn.fn.__module__, fn.fn.__name__, signature,
                       {n: constexprs[n] for n, is_constexpr in params.items() if is_constexpr}, dtype, tile,
                       note=note)


def jit_function(spec: CompileSpec, load=importlib.import_module):
    """The ``@triton.jit`` function behind ``spec`` (``triton.heuristics`` / ``autotune`` wrappers unwrapped);
    ``load`` imports its module."""
    from triton.runtime.jit import JITFunction

    fn = getattr(load(spec.module), spec.function)
    while not isinstance(fn, JITFunction):
        fn = fn.fn
    return fn
