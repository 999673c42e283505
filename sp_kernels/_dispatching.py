"""The glue between a public op call and the registry."""
from __future__ import annotations

import functools

import torch

from sp_kernels.dispatch import Context, DeviceProfile, detect, select


@functools.lru_cache(maxsize=None)
def _profile(device: torch.device) -> DeviceProfile:
    return detect(device)


def requires_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def choose(op: str, x: torch.Tensor | torch.device, shapes: dict, *, dtype: torch.dtype | None = None,
           packed: bool = False, grad: bool = False, options: dict | None = None, impl: str | None = None) -> str:
    """The name of the implementation the registry chooses for a call of ``op`` on ``x``'s device and dtype (or a
    device and ``dtype``); ``impl`` forces one. Under ``torch.compile`` it runs once per traced context (a constant
    in the graph). The one place a call's :class:`Context` is made."""
    device, dtype = (x.device, x.dtype) if isinstance(x, torch.Tensor) else (x, dtype)
    return _chosen(op, device, dtype, tuple(shapes.items()), packed, grad, tuple((options or {}).items()), impl)


@torch._dynamo.assume_constant_result
def _chosen(op, device, dtype, shapes, packed, grad, options, impl) -> str:
    ctx = Context(op, _profile(device), dtype, dict(shapes), packed=packed, requires_grad=grad, options=dict(options))
    return select(op, ctx, force=impl).chosen.name
