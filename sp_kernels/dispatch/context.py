"""The facts of one call that an implementation's ``supports`` check may look at."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import torch

from sp_kernels.dispatch.devices import DeviceProfile


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``: a dtype as messages and descriptions name it."""
    return str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class Context:
    """One call (or one kernelized module) as the selector sees it.

    ``shapes`` holds named sizes after any sequence-parallel reshape, e.g. for the delta rule
    ``{'B': 1, 'T': 8192, 'H': 4, 'HV': 8, 'K': 128, 'V': 128}`` with ``T`` the global length and the heads
    local to this rank. ``options`` holds op flags such as ``{'activation': 'silu'}``.
    """

    op: str
    device: DeviceProfile
    dtype: torch.dtype = torch.float32
    shapes: Mapping[str, int] = field(default_factory=dict)
    packed: bool = False
    sp_size: int = 1
    requires_grad: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "shapes", MappingProxyType(dict(self.shapes)))
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def __reduce__(self):  # read-only mappings do not pickle: rebuild from plain dicts (deepcopy, torch.save)
        return Context, (self.op, self.device, self.dtype, dict(self.shapes), self.packed, self.sp_size,
                         self.requires_grad, dict(self.options))

    def describe(self) -> str:
        dims = " ".join(f"{k}={v}" for k, v in self.shapes.items())
        dtype = dtype_name(self.dtype)
        extra = "".join(f" {k}={v}" for k, v in self.options.items())
        return (
            f"{self.device.spec} {dtype} {dims}{' packed' if self.packed else ''}"
            f"{' grad' if self.requires_grad else ''} sp={self.sp_size}{extra}"
        )
