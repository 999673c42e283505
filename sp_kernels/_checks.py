"""Input validation shared by the public ops: every error names the argument and what was expected."""
from __future__ import annotations

import math

import torch


def tensor(name: str, x, ndim: int | None = None, *, floating: bool = True) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    return x


def same_device_dtype(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor, *, dtype: bool = True) -> None:
    if x.device != ref.device:
        raise ValueError(f"{name}: on {x.device}, but {ref_name} is on {ref.device}")
    if dtype and x.dtype != ref.dtype:
        raise TypeError(f"{name}: dtype {x.dtype} differs from {ref_name}'s {ref.dtype}")


def shape(name: str, x: torch.Tensor, expected: tuple, what: str = "") -> None:
    """``expected`` may hold ``None`` for a free dimension."""
    ok = x.dim() == len(expected) and all(e is None or e == s for e, s in zip(expected, x.shape))
    if not ok:
        want = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
        raise ValueError(f"{name}: expected shape {want}{' ' + what if what else ''}, got {list(x.shape)}")


def scalar_float(name: str, value, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a float or None, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a finite positive number, got {value}")
    return float(value)


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    return value


def flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return value


def cu_seqlens(cu, *, batch: int, total: int, device: torch.device, name: str = "cu_seqlens") -> torch.Tensor | None:
    """Validate packed-sequence boundaries: 1-D integer, starts at 0, non-decreasing, ends at ``total``, B == 1.

    Returns it as int64 on ``device`` (or ``None``). Reads the values once on the host: boundaries decide shapes.
    """
    if cu is None:
        return None
    if not isinstance(cu, torch.Tensor):
        raise TypeError(f"{name}: expected an integer torch.Tensor, got {type(cu).__name__}")
    if cu.dtype.is_floating_point or cu.dtype.is_complex or cu.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer tensor (int32/int64), got {cu.dtype}")
    if cu.dim() != 1:
        raise ValueError(f"{name}: expected a 1-D tensor, got shape {tuple(cu.shape)}")
    if cu.numel() < 2:
        raise ValueError(f"{name}: expected at least 2 entries [0, ..., total], got {cu.numel()}")
    if batch != 1:
        raise ValueError(f"{name}: packed sequences need batch size 1, got B={batch}")
    if torch.compiler.is_compiling():  # the values are data: checked in eager calls, never read while tracing
        return cu.to(device=device, dtype=torch.long)
    values = cu.tolist()
    if values[0] != 0:
        raise ValueError(f"{name}: must start at 0, got {values[0]}")
    if any(b < a for a, b in zip(values, values[1:])):
        raise ValueError(f"{name}: must be non-decreasing, got {values}")
    if values[-1] != total:
        raise ValueError(f"{name}: must end at the token count {total}, got {values[-1]}")
    return cu.to(device=device, dtype=torch.long)
