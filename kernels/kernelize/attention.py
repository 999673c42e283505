"""The forward kernelize installs on a Qwen3.5 / Qwen3-Next attention module (gated query, partial rotary)."""
from __future__ import annotations

import torch

from kernels.kernelize.batch import BATCH_KWARG


def attention_forward(self, hidden_states: torch.Tensor, position_embeddings, attention_mask,
                      past_key_values=None, **kwargs):
    binding = self._sp_kernels
    batch = kwargs.pop(BATCH_KWARG, None)
    cu_seqlens = batch.cu_seqlens if batch is not None else kwargs.get("cu_seq_lens_q")
    packed = cu_seqlens is not None
    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, self.head_dim)

    query, gate = torch.chunk(self.q_proj(hidden_states).view(*input_shape, -1, self.head_dim * 2), 2, dim=-1)
    gate = gate.reshape(*input_shape, -1)
    query = self.q_norm(query.view(hidden_shape)).transpose(1, 2)
    key = self.k_norm(self.k_proj(hidden_states).view(hidden_shape)).transpose(1, 2)
    value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

    cos, sin = position_embeddings
    query, key = binding.ops["rotary"].fn(packed)(query, key, cos, sin, unsqueeze_dim=1)
    if past_key_values is not None and packed:  # packed batches are not recorded in a cache (see gated_deltanet)
        if past_key_values.get_seq_length(self.layer_idx) > 0:
            raise NotImplementedError("past_key_values: continuing a cache with a packed batch is not supported")
    elif past_key_values is not None:
        key, value = past_key_values.update(key, value, self.layer_idx)

    # The mask transformers built is pure causal (or block-causal for packed batches) unless the 2-D mask had
    # padding: then fusion_attention (no mask argument) cannot express it and transformers' attention runs.
    padded = batch.padded if batch is not None else attention_mask is not None
    if padded:
        interface = binding.masked_attention(self.config._attn_implementation)
        out, _ = interface(self, query, key, value, attention_mask, dropout=0.0, scaling=self.scaling, **kwargs)
    else:
        attend = binding.ops["fusion_attention"].fn(packed)
        out = attend(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), causal=True,
                     scale=self.scaling, cu_seqlens=cu_seqlens)
    out = out.reshape(*input_shape, -1).contiguous() * torch.sigmoid(gate)
    return self.o_proj(out), None
