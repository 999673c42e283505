"""Can the installed triton compile for this device type? (Importable is not usable.)

``triton`` (CUDA, ROCm) and ``triton-ascend`` both install the module ``triton``; only the second has the Ascend
backend, only the first the NVIDIA one. Our Triton kernels are one source for both; this check picks the backend.
"""
from __future__ import annotations

import functools
import importlib.util
from typing import Callable

from sp_kernels._lazy import lazy
from sp_kernels.dispatch import Implementation, probe_package

_BACKEND = {"cuda": "triton.backends.nvidia", "npu": "triton.backends.ascend"}
_PACKAGE = {"cuda": "triton", "npu": "triton-ascend"}


@functools.lru_cache(maxsize=None)
def triton_usable(device_type: str) -> tuple[bool, str]:
    ok, version = probe_package("triton")
    if not ok:
        return False, version
    backend = _BACKEND.get(device_type)
    if backend is None:
        return False, f"no Triton backend for {device_type}"
    try:
        found = importlib.util.find_spec(backend) is not None
    except Exception:  # a broken install: treat as absent
        found = False
    if not found:
        return False, f"triton {version} has no {backend.rsplit('.', 1)[1]} backend (install {_PACKAGE[device_type]})"
    return True, ""


def with_backend(supports: Callable | None = None) -> Callable:
    """A ``supports`` check: the Triton backend for the context's device, then ``supports`` (if any)."""

    def check(ctx):
        ok, why = triton_usable(ctx.device.type)
        if not ok or supports is None:
            return ok, why
        return supports(ctx)

    return check


def triton_implementation(op: str, plan, launcher: str, description: str) -> Implementation:
    """Our Triton kernel of ``op`` (CUDA, NPU): the pure tile ``plan`` module (its ``supports`` and ``launches``) is
    imported; ``launcher`` (``"module.function"``, which imports triton) only on the first call."""
    module, _, name = launcher.rpartition(".")
    return Implementation(op=op, name="triton", fn=lazy(module, name), device_types=("cuda", "npu"),
                          packages=("triton",), supports=with_backend(plan.supports), launches=plan.launches,
                          description=description)
