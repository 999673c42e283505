"""Under sequence parallelism the LM head and the loss run on this rank's tokens only.

The text model returns this rank's shard of the last hidden state (no gather), so the causal-LM module's
``lm_head`` sees ``[B, S, ·]`` with ``S = ceil(T / sp_size)``. A pre-hook on that module shifts the labels over
the *global* sequence first — the last token of a shard predicts the first token of the next rank's shard — pads
them with -100 (the final token and the padding that makes the length a multiple of ``sp_size`` predict nothing),
keeps this rank's shard as ``shift_labels`` and passes the global count of valid tokens as ``num_items_in_batch``
(unless the caller, e.g. the Trainer, passed it): transformers' own loss is then this rank's sum of token losses
over the global count. A forward hook sums the loss over the group: every rank returns the loss of ``sp_size=1``,
and backward gives each rank ``sp_size`` times its share, so the mean of the gradients over the group is the
``sp_size=1`` gradient (what DDP / FSDP averaging over the world expects).

Which slice a rank holds: tokens ``[rank * S, (rank + 1) * S)`` of the sequence padded at the end to
``sp_size * S`` tokens (:func:`local_slice`; ``kernels.sp_slice`` / ``kernels.sp_gather`` for users).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sp_kernels.kernelize.batch import call_arguments
from sp_kernels.sp.comm import gather_sequence, sum_over_ranks
from sp_kernels.sp.group import SPGroup

IGNORE_INDEX = -100


def shift_left(x: torch.Tensor, dim: int = 1, fill=IGNORE_INDEX) -> torch.Tensor:
    """``x`` moved one token left along ``dim`` (position ``t`` holds ``x[t + 1]``; the last holds ``fill``): the
    labels of next-token prediction, shifted over the whole sequence before it is sharded."""
    tail = x.narrow(dim, 1, x.shape[dim] - 1)
    pad = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [0, 1]
    return F.pad(tail, pad, value=fill)


def local_slice(x: torch.Tensor, dim: int, sp: SPGroup, fill=0) -> torch.Tensor:
    """This rank's shard of a full-sequence ``x``: padded along ``dim`` with ``fill`` to a multiple of the group
    size, then the rank's contiguous block."""
    T = x.shape[dim]
    pad = -T % sp.size
    if pad:
        x = F.pad(x, [0, 0] * (x.dim() - 1 - dim % x.dim()) + [0, pad], value=fill)
    shard = (T + pad) // sp.size
    return x.narrow(dim, sp.rank * shard, shard)


@dataclass(frozen=True)
class SPLossPreHook:
    """Forward pre-hook (with kwargs) on a causal-LM module: this rank's shifted labels and the global count."""

    sp: SPGroup

    def __call__(self, module, args, kwargs):
        call = call_arguments(module, args, kwargs)
        keep = call.get("logits_to_keep", 0)
        if not (isinstance(keep, int) and keep == 0):
            raise NotImplementedError("logits_to_keep: under sequence parallelism every rank keeps its own tokens' "
                                      "logits; slice them yourself (kernels.sp_slice)")
        router = call.get("output_router_logits")
        if router or (router is None and getattr(module.config, "output_router_logits", False)):
            raise NotImplementedError("output_router_logits: the MoE load-balancing loss is not sharded under "
                                      "sequence parallelism")
        labels, shifted = call.get("labels"), call.get("shift_labels")
        if labels is None and shifted is None:
            return (), call
        if shifted is None:
            shifted = shift_left(labels)
        if call.get("num_items_in_batch") is None:
            call["num_items_in_batch"] = (shifted != IGNORE_INDEX).sum()
        local = local_slice(shifted, 1, self.sp, IGNORE_INDEX).contiguous()  # (transformers views it flat)
        call["labels"] = call["shift_labels"] = local
        return (), call


@dataclass(frozen=True)
class SPLossHook:
    """Forward hook (with kwargs) on a causal-LM module: the loss summed over the group (every rank the same);
    with ``gather_logits`` the full logits on every rank (``[B, T, V]``: the memory SP otherwise saves)."""

    sp: SPGroup
    gather_logits: bool = False

    def __call__(self, module, args, kwargs, output):
        if output.loss is not None:
            output.loss = sum_over_ranks(output.loss, self.sp)
        if self.gather_logits:
            call = call_arguments(module, args, kwargs)
            x = call["input_ids"] if call.get("input_ids") is not None else call["inputs_embeds"]
            output.logits = gather_sequence(output.logits, 1, self.sp)[:, : x.shape[1]]
        return output
