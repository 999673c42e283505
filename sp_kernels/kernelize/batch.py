"""What a patched layer must know about the whole batch, computed once per forward by a pre-hook on the text model.

transformers represents a padding-free (packed) batch as ``input_ids [1, T]`` with ``position_ids`` restarting at 0
at each sequence start (``DataCollatorWithFlattening``). Its torch path refuses such batches; kernelize turns the
restarts into ``cu_seqlens`` for the conv, the delta rule and attention.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch


#: keyword under which the hook hands :class:`BatchInfo` to the patched layers (flows with transformers' kwargs)
BATCH_KWARG = "sp_kernels_batch"


@dataclass  # not frozen: transformers' exporters rewrite the tensors in the recorded call arguments in place
class BatchInfo:
    """``cu_seqlens``: packed-sequence boundaries (int64) or ``None``; ``padded``: a 2-D attention mask with zeros.

    Under sequence parallelism ``seq_len`` is the global length before padding to a multiple of ``sp_size``, and
    ``cu_seqlens`` covers the padded global sequence; outside it ``seq_len`` is ``None``. ``unpadded``: the caller's
    ``[B, T]`` mask of real tokens when a padded batch was packed into one row (sequence parallelism), else ``None``.
    """

    cu_seqlens: torch.Tensor | None
    padded: bool
    seq_len: int | None = None
    unpadded: torch.Tensor | None = None


@functools.cache
def register_for_export() -> None:
    """Make :class:`BatchInfo` a pytree node, once (kernelize calls it): exporters flatten the call arguments they
    record, and the text models' include it."""
    torch.export.register_dataclass(BatchInfo, serialized_type_name="sp_kernels.BatchInfo")


@torch.compiler.disable  # data-dependent (where positions restart): one graph break per forward, not five
def cu_seqlens_from_position_ids(position_ids: torch.Tensor) -> torch.Tensor | None:
    """Boundaries of packed sequences from ``position_ids``: ``[B, T]``, or mRoPE's ``[3, B, T]`` / ``[4, B, T]``.

    A new sequence starts only where the positions restart at 0 — what ``DataCollatorWithFlattening`` makes — on
    the text row of 4-row positions, on every row of 3-row ones (image and video tokens repeat or jump positions
    within one sequence, so "not previous + 1" would cut a sample with an image into many). Returns ``None`` for a
    batch that is not packed: B != 1, a single sequence, or positions not starting at 0 (a continuation).
    """
    if position_ids.dim() == 2:
        rows = position_ids[None]
    elif position_ids.dim() == 3 and position_ids.shape[0] in (3, 4):
        rows = position_ids[:1] if position_ids.shape[0] == 4 else position_ids
    else:
        raise ValueError(f"position_ids: expected [B, T], [3, B, T] or [4, B, T], got {list(position_ids.shape)}")
    if rows.shape[1] != 1 or rows.shape[2] < 2:
        return None
    restart = (rows[:, 0] == 0).all(dim=0)  # [T]
    if not bool(restart[0]):
        return None
    starts = torch.nonzero(restart[1:]).flatten() + 1
    if starts.numel() == 0:
        return None
    T = rows.shape[2]
    return torch.cat([starts.new_zeros(1), starts, starts.new_full((1,), T)]).long()


def _signature(forward) -> tuple[inspect.Signature, str | None]:
    """``forward``'s signature (with ``self``) and the name of its ``**kwargs``, read once per function in eager
    calls (reading a signature costs more than a decoding step's hooks otherwise do); while tracing, read afresh
    (dynamo traces through the reading, not through a cache)."""
    found = None if torch.compiler.is_compiling() else _SIGNATURES.get(forward)
    if found is None:
        sig = inspect.signature(forward)
        var = next((n for n, p in sig.parameters.items() if p.kind is inspect.Parameter.VAR_KEYWORD), None)
        found = (sig, var)
        if not torch.compiler.is_compiling():
            _SIGNATURES[forward] = found
    return found


_SIGNATURES: dict = {}


def call_arguments(module, args, kwargs) -> dict:
    """The arguments of a call to ``module.forward`` by name (extra ``**kwargs`` merged in)."""
    forward = module.forward
    function = getattr(forward, "__func__", None)
    head = (module,) if function is not None and getattr(forward, "__self__", None) is module else ()
    sig, var = _signature(function if head else forward)
    bound = sig.bind_partial(*head, *args, **kwargs).arguments
    if head:
        bound.pop(next(iter(sig.parameters)))
    if var is not None and var in bound:
        bound.update(bound.pop(var))
    return bound


class PackedBatchHook:
    """``register_forward_pre_hook(..., with_kwargs=True)`` on a text model: adds :data:`BATCH_KWARG` to the call.

    An explicit ``cu_seq_lens_q`` (``DataCollatorWithFlattening(return_flash_attn_kwargs=True)``) wins over the
    restarts of ``position_ids``. A module-level class, so that kernelized models deep-copy and pickle.
    """

    def __call__(self, module, args, kwargs):
        bound = call_arguments(module, args, kwargs)
        mask = bound.get("attention_mask")
        if isinstance(mask, dict):  # the masks transformers built ahead, per layer type (static-cache generation):
            mask = mask.get("linear_attention")  # the 2-D padding mask of the linear layers, None without padding
        position_ids = bound.get("position_ids")
        # while tracing (torch.compile, torch.export), a 2-D mask's values cannot be read: it counts as padding
        # (transformers' masked attention is right either way)
        compiling = torch.compiler.is_compiling() or torch.compiler.is_exporting()
        padded = isinstance(mask, torch.Tensor) and mask.dim() == 2 and (compiling or not bool(mask.all()))
        cu = kwargs.get("cu_seq_lens_q")
        if cu is not None and padded:
            raise ValueError("attention_mask: a packed batch (cu_seq_lens_q) must not be padded")
        # A packed batch is padding-free: positions restarting at 0 in a padded row are the padding's (generate
        # gives left padding position 0, or 1), not sequence starts. A continuation's positions do not start at 0;
        # a single token (a decode step, shapes known while tracing) is never packed. An exported program cannot
        # branch on the positions' values: there a packed batch comes with cu_seq_lens_q.
        if (cu is None and position_ids is not None and position_ids.shape[-1] > 1 and not (padded and not compiling)
                and not torch.compiler.is_exporting()):
            cu = cu_seqlens_from_position_ids(position_ids)
            if cu is not None and padded:
                raise ValueError("attention_mask: under torch.compile a packed batch (position_ids restarting at 0) "
                                 "must not carry an attention_mask (its values cannot be read while tracing)")
        kwargs = dict(kwargs)
        kwargs[BATCH_KWARG] = BatchInfo(None if cu is None else cu.long(), padded)
        return args, kwargs
