"""``lazy("pkg.module", "name")``: a function that imports its module on first call.

Implementations backed by optional packages (triton, fla, torch_npu, MindSpeed, flash-attn) register at
``import sp_kernels`` without importing those packages: the registry probes them only when they are considered.
"""
from __future__ import annotations

import importlib
from typing import Callable


def lazy(module: str, name: str) -> Callable:
    target: list[Callable] = []

    def call(*args, **kwargs):
        if not target:
            target.append(getattr(importlib.import_module(module), name))
        return target[0](*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{module}.{name}, imported on first call."
    return call
