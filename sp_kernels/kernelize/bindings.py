"""What kernelize binds to a module: per op, the registry's choice, re-checked per sequence length."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import torch

from sp_kernels.dispatch import DeviceProfile, Implementation, Selection, select
from sp_kernels._contexts import LayerContext
from sp_kernels._library import LIBRARY


@torch._dynamo.assume_constant_result
def _chosen_name(context: LayerContext, packed: bool, T: int | None, force: str | None) -> str:
    """The selection of a binding while tracing (run once per traced context, a constant in the graph)."""
    return select(context.op, context(packed, T), force, "force").chosen.name


@dataclass(frozen=True)
class OpBinding:
    """One op of one module. ``dense`` / ``packed`` are the selections made at kernelize time (length unknown,
    shown in the report); at run time :meth:`fn` selects once per ``(packed, T)`` — implementations whose limits
    depend on the length (tiles against the Ascend Unified Buffer, launch grids) see the real one — and caches it.
    """

    op: str
    context: LayerContext = field(repr=False)  # (packed, T) -> Context
    force: str | None
    dense: Selection = field(repr=False)
    packed: Selection = field(repr=False)
    _chosen: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def create(cls, op: str, context: LayerContext, force: str | None) -> "OpBinding":
        return cls(op, context, force, select(op, context(False, None), force, "force"),
                   select(op, context(True, None), force, "force"))

    def selection(self, *, packed: bool, T: int | None = None) -> Selection:
        key = (packed, T)
        sel = self._chosen.get(key)
        if sel is None:
            sel = self._chosen[key] = select(self.op, self.context(packed, T), self.force, "force")
        return sel

    def fn(self, *, packed: bool, T: int | None = None) -> Callable:
        """The implementation to call; under ``torch.compile`` the op's custom op running it (one graph node)."""
        if torch.compiler.is_compiling():
            return functools.partial(LIBRARY[self.op], _chosen_name(self.context, packed, T, self.force))
        return self.selection(packed=packed, T=T).chosen.fn

    @property
    def implementations(self) -> tuple[Implementation, ...]:
        if self.packed.chosen is self.dense.chosen:
            return (self.dense.chosen,)
        return (self.dense.chosen, self.packed.chosen)

    def describe(self) -> str:
        if self.packed.chosen is self.dense.chosen:
            return self.dense.chosen.name
        return f"{self.dense.chosen.name} (packed: {self.packed.chosen.name})"


@dataclass(frozen=True)
class ModuleBinding:
    """Everything a patched module's forward reads: ``ops`` maps op name -> :class:`OpBinding`."""

    kind: str  # 'gated_deltanet' | 'attention'
    family: str
    device: DeviceProfile  # what the selection was made for (detected, or simulated: ``kernelize(device=...)``)
    ops: dict
    npu_patched: bool
    project: Callable | None = None  # gated_deltanet: hidden -> (mixed_qkv, z, b, a), per family
    masked_attention: Callable | None = None  # attention: attn_implementation -> transformers' interface
    shard: object = None  # sequence parallel: GDNShard (gated_deltanet) or SPGroup (attention); None without SP

    def __post_init__(self):  # the device types every bound implementation runs on (checked per forward)
        runs_on = frozenset.intersection(*(frozenset(i.device_types) for b in self.ops.values()
                                           for i in b.implementations))
        object.__setattr__(self, "runs_on", runs_on)

    def check_device(self, module, x: torch.Tensor) -> None:
        """Before any kernel runs: the bound implementations run on the device of the tensors (a model kernelized
        for a simulated ``cuda:sm90`` holds Triton kernels that cannot take CPU tensors)."""
        if x.device.type not in self.runs_on:
            chosen = ", ".join(f"{op} {b.describe()}" for op, b in self.ops.items())
            raise RuntimeError(
                f"{type(module).__name__} is kernelized for {self.device.spec}"
                f"{' (simulated)' if self.device.simulated else ''} ({chosen}) but its input is on {x.device}: "
                "kernelize(model, device=...) selects as on that device and does not move tensors. Move the model "
                f"there, or kernelize it again for {x.device.type} (the report and `python -m sp_kernels explain` "
                "still show the selection)")
