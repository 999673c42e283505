"""What kernelize binds to a module: per op, the registry's choice, re-checked per sequence length."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from dispatch import Context, Implementation, Selection, select


@dataclass(frozen=True)
class OpBinding:
    """One op of one module. ``dense`` / ``packed`` are the selections made at kernelize time (length unknown,
    shown in the report); at run time :meth:`fn` selects once per ``(packed, T)`` — implementations whose limits
    depend on the length (tiles against the Ascend Unified Buffer, launch grids) see the real one — and caches it.
    """

    op: str
    context: Callable[[bool, "int | None"], Context] = field(repr=False)
    force: str | None
    dense: Selection = field(repr=False)
    packed: Selection = field(repr=False)
    _chosen: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def create(cls, op: str, context: Callable, force: str | None) -> "OpBinding":
        return cls(op, context, force, select(op, context(False, None), force), select(op, context(True, None), force))

    def selection(self, packed: bool, T: int | None = None) -> Selection:
        key = (packed, T)
        sel = self._chosen.get(key)
        if sel is None:
            sel = self._chosen[key] = select(self.op, self.context(packed, T), self.force)
        return sel

    def fn(self, packed: bool, T: int | None = None) -> Callable:
        return self.selection(packed, T).chosen.fn

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
    ops: dict
    npu_patched: bool
    project: Callable | None = None  # gated_deltanet: hidden -> (mixed_qkv, z, b, a), per family
    masked_attention: Callable | None = None  # attention: attn_implementation -> transformers' interface
    shard: object = None  # sequence parallel: GDNShard (gated_deltanet) or SPGroup (attention); None without SP
