"""What a patched layer must know about the whole batch, computed once per forward by a pre-hook on the text model.

transformers represents a padding-free (packed) batch as ``input_ids [1, T]`` with ``position_ids`` restarting at 0
at each sequence start (``DataCollatorWithFlattening``). Its torch path refuses such batches; kernelize turns the
restarts into ``cu_seqlens`` for the conv, the delta rule and attention.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

#: keyword under which the hook hands :class:`BatchInfo` to the patched layers (flows with transformers' kwargs)
BATCH_KWARG = "sp_kernels_batch"


@dataclass(frozen=True)
class BatchInfo:
    """``cu_seqlens``: packed-sequence boundaries (int64) or ``None``; ``padded``: a 2-D attention mask with zeros.

    Under sequence parallelism ``seq_len`` is the global length before padding to a multiple of ``sp_size``, and
    ``cu_seqlens`` covers the padded global sequence; outside it ``seq_len`` is ``None``.
    """

    cu_seqlens: torch.Tensor | None
    padded: bool
    seq_len: int | None = None


def cu_seqlens_from_position_ids(position_ids: torch.Tensor) -> torch.Tensor | None:
    """Boundaries of packed sequences from ``position_ids [1, T]`` (or mRoPE's ``[k, 1, T]``: text row 0).

    A new sequence starts wherever the position does not continue the previous one by +1 (as transformers'
    ``find_packed_sequence_indices``). Returns ``None`` for a batch that is not packed: B != 1, a single
    sequence, or positions not starting at 0 (a continuation with a cache).
    """
    if position_ids.dim() == 3:
        position_ids = position_ids[0]
    if position_ids.dim() != 2 or position_ids.shape[0] != 1 or position_ids.shape[1] < 2:
        return None
    pos = position_ids[0]
    if int(pos[0]) != 0:
        return None
    starts = torch.nonzero(pos[1:] != pos[:-1] + 1).flatten() + 1
    if starts.numel() == 0:
        return None
    total = torch.tensor([pos.numel()], device=pos.device)
    return torch.cat([torch.zeros(1, dtype=torch.long, device=pos.device), starts.long(), total.long()])


def call_arguments(module, args, kwargs) -> dict:
    """The arguments of a call to ``module.forward`` by name (extra ``**kwargs`` merged in)."""
    sig = inspect.signature(module.forward)
    bound = sig.bind_partial(*args, **kwargs).arguments
    for name, param in sig.parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD and name in bound:
            bound.update(bound.pop(name))
    return bound


def make_pre_hook():
    """A ``register_forward_pre_hook(..., with_kwargs=True)`` hook adding :data:`BATCH_KWARG` to the call."""

    def hook(module, args, kwargs):
        bound = call_arguments(module, args, kwargs)
        mask = bound.get("attention_mask")
        position_ids = bound.get("position_ids")
        past = bound.get("past_key_values")
        cu = kwargs.get("cu_seq_lens_q")
        if cu is None and position_ids is not None and (past is None or past.get_seq_length() == 0):
            cu = cu_seqlens_from_position_ids(position_ids)
        padded = isinstance(mask, torch.Tensor) and mask.dim() == 2 and not bool(mask.all())
        if cu is not None and padded:
            raise ValueError("attention_mask: a packed batch (position_ids restarting at 0) must not be padded")
        kwargs = dict(kwargs)
        kwargs[BATCH_KWARG] = BatchInfo(None if cu is None else cu.long(), padded)
        return args, kwargs

    return hook
