"""How a sequence is laid out over the ranks of a sequence-parallel group (tensors only, no model).

Rank ``r`` of ``n`` holds tokens ``[r * S, (r + 1) * S)`` of the sequence padded at the end to ``n * S`` tokens,
``S = ceil(T / n)``. Next-token labels are shifted over the whole sequence before it is split, so the last token
of a shard predicts the first token of the next rank's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sp_kernels.sp.group import SPGroup

IGNORE_INDEX = -100


def shift_left(x: torch.Tensor, dim: int = 1, fill=IGNORE_INDEX) -> torch.Tensor:
    """``x`` moved one token left along ``dim`` (position ``t`` holds ``x[t + 1]``; the last holds ``fill``): the
    labels of next-token prediction, shifted over the whole sequence before it is sharded."""
    tail = x.narrow(dim, 1, x.shape[dim] - 1)
    pad = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [0, 1]
    return F.pad(tail, pad, value=fill)


def shard(T: int, sp: SPGroup) -> tuple[int, slice]:
    """``(pad, tokens)``: the padding that makes ``T`` a multiple of the group size, and this rank's tokens of the
    padded sequence."""
    pad = -T % sp.size
    S = (T + pad) // sp.size
    return pad, slice(sp.rank * S, (sp.rank + 1) * S)


def local_slice(x: torch.Tensor, dim: int, sp: SPGroup, fill=0) -> torch.Tensor:
    """This rank's shard of a full-sequence ``x``: padded along ``dim`` with ``fill`` (:func:`shard`), then the
    rank's contiguous block."""
    pad, tokens = shard(x.shape[dim], sp)
    if pad:
        x = F.pad(x, [0, 0] * (x.dim() - 1 - dim % x.dim()) + [0, pad], value=fill)
    return x.narrow(dim, tokens.start, tokens.stop - tokens.start)
