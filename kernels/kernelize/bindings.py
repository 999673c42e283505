"""What kernelize binds to a module: the implementation chosen per op, for ordinary and for packed batches."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from dispatch import Implementation, Selection


@dataclass(frozen=True)
class OpBinding:
    """The implementation of one op for one module; ``packed`` differs from ``dense`` only if the registry said so."""

    dense: Selection
    packed: Selection

    def fn(self, packed: bool):
        return (self.packed if packed else self.dense).chosen.fn

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
