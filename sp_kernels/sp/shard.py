"""Split the batch over the sequence-parallel ranks before a text model runs.

The contract: every rank calls the model with the same full batch. The pre-hook pads the sequence to a multiple of
``sp_size`` (padding at the end: causal layers never let it reach a real token), keeps this rank's contiguous
shard of tokens and positions, and passes the global packed-sequence boundaries to the layers. The text model
returns this rank's shard; the causal-LM module's head and loss run on it (:mod:`sp_kernels.sp.loss`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sp_kernels.kernelize.batch import BATCH_KWARG, BatchInfo, call_arguments, cu_seqlens_from_position_ids
from sp_kernels.kernelize.compat import cache_of
from sp_kernels.sp.group import SPGroup

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
        mask = call.get("attention_mask")
        if mask is not None:
            if not (isinstance(mask, torch.Tensor) and mask.dim() == 2 and bool(mask.all())):
                raise NotImplementedError("attention_mask: padded batches under sequence parallelism are not "
                                          "supported; pack the sequences instead (position_ids restarting at 0)")
            call["attention_mask"] = None
        pos = call.get("position_ids")
        if pos is None:
            pos = torch.arange(T, device=x.device).expand(B, T)
        cu = call.get("cu_seq_lens_q")
        cu = cu_seqlens_from_position_ids(pos) if cu is None else cu.long()
        for name in _FLASH_KWARGS:
            call.pop(name, None)

        pad = -T % sp.size
        if pad:
            filler = x.new_zeros((B, pad) + tuple(x.shape[2:]))
            x = torch.cat([x, filler], dim=1)
            pos = _pad_positions(pos, pad)
            if cu is not None:
                cu = torch.cat([cu[:-1], cu.new_tensor([T + pad])])  # the padding extends the last sequence
        shard = (T + pad) // sp.size
        local = slice(sp.rank * shard, (sp.rank + 1) * shard)
        call[key] = x[:, local]
        call["position_ids"] = pos[..., local]
        call[BATCH_KWARG] = BatchInfo(cu, False, seq_len=T)
        return (), call
