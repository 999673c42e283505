"""What users of a model kernelized with ``sp_size > 1`` need around it: this rank's slice of a full-sequence tensor,
and the gather of per-token results.

Under SP a rank holds tokens ``[rank * S, (rank + 1) * S)`` of the sequence padded at the end to a multiple of
``sp_size`` (``S = ceil(T / sp_size)``): ``out.logits`` is that shard. Labels, advantages, masks or per-token weights
of the full batch are sliced the same way (``shift=True`` first moves them one token left over the *global*
sequence, as the labels of next-token prediction); per-token results (log-probs for RL) are all-gathered back.
"""
from __future__ import annotations

import torch

from sp_kernels.sp.comm import gather_sequence
from sp_kernels.sp.group import SPGroup
from sp_kernels.sp.loss import local_slice, shift_left


def _group(model: torch.nn.Module) -> SPGroup:
    from sp_kernels.kernelize import SP_GROUP

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    sp = next((getattr(m, SP_GROUP) for m in model.modules() if hasattr(m, SP_GROUP)), None)
    if sp is None:
        raise ValueError("model: not kernelized with sp_size > 1 (kernels.kernelize(model, sp_size=N))")
    return sp


def _dim(x, dim: int) -> int:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a tensor, got {type(x).__name__}")
    if isinstance(dim, bool) or not isinstance(dim, int) or not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim: expected a dimension of x (which has {x.dim()}), got {dim!r}")
    return dim % x.dim()


def sp_slice(model: torch.nn.Module, x: torch.Tensor, dim: int = 1, *, shift: bool = False, fill=0) -> torch.Tensor:
    """This rank's slice of the full-sequence tensor ``x`` (sequence along ``dim``), as the model shards tokens:
    padded with ``fill`` to a multiple of ``sp_size``. ``shift=True`` first moves ``x`` one token left over the
    whole sequence (``fill`` at the end): the alignment of ``out.logits`` with the token each position predicts.
    Use ``fill=-100`` for labels, ``0`` for weights and masks."""
    sp = _group(model)
    d = _dim(x, dim)
    return local_slice(shift_left(x, d, fill) if shift else x, d, sp, fill)


def sp_gather(model: torch.nn.Module, x: torch.Tensor, dim: int = 1, *, seq_len: int | None = None) -> torch.Tensor:
    """All-gather this rank's per-token ``x`` (e.g. log-probs from ``out.logits``) along ``dim`` over the SP group,
    on every rank; ``seq_len`` drops the padding (default: keep the padded length). Autograd-aware: when every
    rank computes the same loss from the result, the mean of the gradients over the group is ``sp_size=1``'s."""
    sp = _group(model)
    d = _dim(x, dim)
    full = gather_sequence(x, d, sp)
    if seq_len is None:
        return full
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 0 < seq_len <= full.shape[d]:
        raise ValueError(f"seq_len: expected an int in [1, {full.shape[d]}], got {seq_len!r}")
    return full.narrow(d, 0, seq_len)
