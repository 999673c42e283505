"""The glue between a public op call and the registry."""
from __future__ import annotations

import functools
from typing import Callable

import torch

from dispatch import Context, DeviceProfile, detect, select


@functools.lru_cache(maxsize=None)
def _profile(device: torch.device) -> DeviceProfile:
    return detect(device)


def profile_of(x: torch.Tensor) -> DeviceProfile:
    """The device profile of the device ``x`` lives on (selection is by the tensors' device)."""
    return _profile(x.device)


def requires_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def choose(ctx: Context, impl: str | None) -> Callable:
    """The function of the implementation chosen for ``ctx`` (``impl`` forces one by name)."""
    return select(ctx.op, ctx, force=impl).chosen.fn
