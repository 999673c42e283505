"""Sequence parallelism around a kernelized transformers model: the hooks that split the batch and keep the LM head
and the loss sharded, and what users need around it.

**The batch.** Every rank calls the model with the same full batch. A pre-hook on the text model pads the sequence
to a multiple of ``sp_size`` (padding at the end: causal layers never let it reach a real token), keeps this
rank's contiguous shard of tokens and positions (:mod:`sp_kernels.sp.layout`), and passes the global
packed-sequence boundaries to the layers. The text model returns this rank's shard.

**The head and the loss.** The causal-LM module's ``lm_head`` sees ``[B, S, ·]``. A pre-hook on that module
shifts the labels over the *global* sequence first, pads them with -100 (the final token and the padding predict
nothing), keeps this rank's shard as ``shift_labels`` and passes the global count of valid tokens as
``num_items_in_batch`` (unless the caller, e.g. the Trainer, passed it): transformers' own loss is then this rank's
sum of token losses over the global count. A forward hook sums the loss over the group: every rank returns the loss
of ``sp_size=1``, and backward gives each rank ``sp_size`` times its share, so the mean of the gradients over the
group is the ``sp_size=1`` gradient (what DDP / FSDP averaging over the world expects).

**Users** get this rank's slice of a full-sequence tensor (:func:`sp_slice`: labels, advantages, masks) and the
gather of per-token results (:func:`sp_gather`: log-probs for RL).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sp_kernels.kernelize.batch import BATCH_KWARG, BatchInfo, call_arguments, cu_seqlens_from_position_ids
from sp_kernels.kernelize.compat import cache_of
from sp_kernels.sp.comm import gather_sequence, sum_over_ranks
from sp_kernels.sp.group import SPGroup
from sp_kernels.sp.layout import IGNORE_INDEX, local_slice, shard, shift_left

#: the attribute that holds the SP group, on the text models and causal-LM modules of a model kernelized with
#: sp_size > 1
SP_GROUP = "_sp_kernels_sp"
_FLASH_KWARGS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")
#: the text model's parameters the pre-hook handles (``kernelize`` refuses a text model with any other)
HANDLED = ("input_ids", "attention_mask", "position_ids", "cache", "inputs_embeds", "use_cache")


def _pad_positions(pos: torch.Tensor, pad: int) -> torch.Tensor:
    step = torch.arange(1, pad + 1, device=pos.device, dtype=pos.dtype)
    return torch.cat([pos, pos[..., -1:] + step], dim=-1)


@dataclass(frozen=True)
class SPPreHook:
    """Forward pre-hook (with kwargs) on a text model: pads, shards and describes the batch for this rank."""

    sp: SPGroup

    def __call__(self, module, args, kwargs):
        sp = self.sp
        call = call_arguments(module, args, kwargs)
        if cache_of(call) is not None or call.get("use_cache"):
            raise NotImplementedError("use_cache: decoding with a cache under sequence parallelism is not supported")
        call["use_cache"] = False
        key = "input_ids" if call.get("input_ids") is not None else "inputs_embeds"
        x = call[key]
        B, T = x.shape[:2]
        mask = call.pop("attention_mask", None)
        if mask is not None and not (isinstance(mask, torch.Tensor) and mask.dim() == 2):
            raise NotImplementedError("attention_mask: under sequence parallelism a [B, T] padding mask, not "
                                      f"{type(mask).__name__} {list(getattr(mask, 'shape', []))}")
        pos = call.get("position_ids")
        given = pos is not None  # positions may mark packed sequences; without them a row is one sequence
        if pos is None:
            pos = torch.arange(T, device=x.device).expand(B, T)
        cu = call.get("cu_seq_lens_q")
        unpadded = None
        if mask is not None and not bool(mask.all()):  # padding: the real tokens packed into one row
            if cu is not None:
                raise ValueError("attention_mask: a packed batch (cu_seq_lens_q) must not be padded")
            unpadded = mask.bool()
            x, pos, cu = _unpad(x, pos, unpadded)
            B, T = x.shape[:2]
        elif cu is not None:
            cu = cu.long()
        elif given:
            cu = cu_seqlens_from_position_ids(pos)
        for name in _FLASH_KWARGS:
            call.pop(name, None)

        pad, local = shard(T, sp)
        if pad:
            pos = _pad_positions(pos, pad)
            if cu is not None:
                cu = torch.cat([cu[:-1], cu.new_tensor([T + pad])])  # the padding extends the last sequence
        call[key] = local_slice(x, 1, sp)
        call["position_ids"] = pos[..., local]
        call[BATCH_KWARG] = BatchInfo(cu, False, seq_len=T, unpadded=unpadded)
        return (), call


def _unpad(x, pos, keep):
    """The real tokens of a padded batch as one packed row: ``x [1, n, ...]``, their positions (the caller's, so
    rotary sees what it sees without sequence parallelism) and the rows' boundaries."""
    lengths = keep.sum(1)
    lengths = lengths[lengths > 0]
    cu = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).long()
    pos = pos.expand(*pos.shape[:-2], *keep.shape) if pos.shape[-2] != keep.shape[0] else pos
    return x[keep][None], pos[..., keep][..., None, :], cu


@dataclass(frozen=True)
class SPRepadHook:
    """Forward hook (with kwargs) on a text model: after a padded batch ran packed, its hidden states back in the
    caller's layout — this rank's shard of ``[B, T, ·]``, as for an unpadded batch (padded positions hold zeros)."""

    sp: SPGroup

    def __call__(self, module, args, kwargs, output):
        batch = kwargs.get(BATCH_KWARG)
        if batch is None or batch.unpadded is None:
            return output
        keep = batch.unpadded
        hidden = output.last_hidden_state
        packed = gather_sequence(hidden, 1, self.sp)[0, : batch.seq_len]  # [n, ·], every real token
        full = hidden.new_zeros(*keep.shape, *hidden.shape[2:]).masked_scatter(keep[..., None], packed)
        output.last_hidden_state = local_slice(full, 1, self.sp)
        return output


@dataclass(frozen=True)
class SPLossPreHook:
    """Forward pre-hook (with kwargs) on a causal-LM module: this rank's shifted labels and the global count."""

    sp: SPGroup

    def __call__(self, module, args, kwargs):
        call = call_arguments(module, args, kwargs)
        keep = call.get("logits_to_keep", 0)
        if not (isinstance(keep, int) and keep == 0):
            raise NotImplementedError("logits_to_keep: under sequence parallelism every rank keeps its own tokens' "
                                      "logits; slice them yourself (sp_kernels.sp_slice)")
        router = call.get("output_router_logits")
        if router or (router is None and getattr(module.config, "output_router_logits", False)):
            raise NotImplementedError("output_router_logits: the MoE load-balancing loss is not sharded under "
                                      "sequence parallelism")
        labels, shifted = call.get("labels"), call.get("shift_labels")
        if labels is None and shifted is None:
            return (), call
        if shifted is None:
            shifted = shift_left(labels)
        mask = call.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2 and bool((shifted[mask == 0] != IGNORE_INDEX).any()):
            raise ValueError("labels: a label predicted from a padded position (attention_mask 0) must be -100 "
                             "under sequence parallelism (padding runs no model; with left padding that includes "
                             "each row's first real token)")
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


def sp_group(model: torch.nn.Module) -> SPGroup:
    """The SP group a model was kernelized for (a ValueError if it was not, with sp_size > 1)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    sp = next((getattr(m, SP_GROUP) for m in model.modules() if hasattr(m, SP_GROUP)), None)
    if sp is None:
        raise ValueError("model: not kernelized with sp_size > 1 (sp_kernels.kernelize(model, sp_size=N))")
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
    sp = sp_group(model)
    d = _dim(x, dim)
    return local_slice(shift_left(x, d, fill) if shift else x, d, sp, fill)


def sp_gather(model: torch.nn.Module, x: torch.Tensor, dim: int = 1, *, seq_len: int | None = None) -> torch.Tensor:
    """All-gather this rank's per-token ``x`` (e.g. log-probs from ``out.logits``) along ``dim`` over the SP group,
    on every rank; ``seq_len`` drops the padding (default: keep the padded length). Autograd-aware: when every
    rank computes the same loss from the result, the mean of the gradients over the group is ``sp_size=1``'s."""
    sp = sp_group(model)
    d = _dim(x, dim)
    full = gather_sequence(x, d, sp)
    if seq_len is None:
        return full
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 0 < seq_len <= full.shape[d]:
        raise ValueError(f"seq_len: expected an int in [1, {full.shape[d]}], got {seq_len!r}")
    return full.narrow(d, 0, seq_len)
