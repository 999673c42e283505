"""The forward kernelize installs on a Qwen3.5 / Qwen3-Next attention module (gated query, partial rotary).

Under sequence parallelism (Ulysses) the rotary embedding is applied to this rank's tokens (it is per token), an
all-to-all trades tokens for heads (``[B, H, T/N, D]`` -> ``[B, H/N, T, D]``; grouped KV heads stay with their
query heads because both head counts divide by N, or, with fewer KV heads than ranks, each is copied to the ranks
whose query heads use it), attention runs over the whole sequence, and a second all-to-all brings the output back
to this rank's tokens.
"""
from __future__ import annotations

import torch

from sp_kernels._contexts import kv_replicas
from sp_kernels.kernelize.batch import BATCH_KWARG
from sp_kernels.kernelize.compat import attention_weights_requested, fixed_length, the_cache
from sp_kernels.sp.comm import all_to_all


def attention_forward(self, hidden_states: torch.Tensor, position_embeddings, attention_mask, cache=None, *,
                      past_key_values=None, **kwargs):
    """transformers' attention forward (``past_key_values`` is the cache keyword before transformers 5.24)."""
    past_key_values = the_cache(cache, past_key_values=past_key_values)
    binding = self._sp_kernels
    binding.check_device(self, hidden_states)
    batch = kwargs.pop(BATCH_KWARG, None)
    sp = binding.shard
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
    rotary = binding.ops["apply_rotary_pos_emb"].fn(packed=packed, T=query.shape[2])
    query, key = rotary(query, key, cos, sin, unsqueeze_dim=1)
    weights = attention_weights_requested()

    if sp is not None:
        if past_key_values is not None:
            raise NotImplementedError("cache: decoding with a cache under sequence parallelism is not "
                                      "supported")
        if weights:
            raise NotImplementedError("output_attentions: attention weights under sequence parallelism are not "
                                      "supported")
        if batch is None or batch.seq_len is None:
            raise RuntimeError(f"{type(self).__name__} is kernelized for sequence parallelism: call the whole "
                               "model, whose pre-hook shards the batch")
        replicas = kv_replicas(key.shape[1], sp.size)  # fewer key/value heads than ranks: each rank gets a copy
        if replicas > 1:
            key, value = key.repeat_interleave(replicas, dim=1), value.repeat_interleave(replicas, dim=1)
        # [B, heads, T/N, D] -> [B, heads/N, T, D]
        query, key, value = (all_to_all(t, scatter_dim=1, gather_dim=2, sp=sp) for t in (query, key, value))
        attend = binding.ops["fusion_attention"].fn(packed=packed, T=query.shape[2])
        out = attend(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), causal=True,
                     scale=self.scaling, cu_seqlens=cu_seqlens)
        out = all_to_all(out, scatter_dim=1, gather_dim=2, sp=sp)  # [B, T, H/N, D] -> [B, T/N, H, D]
        return _output(self, out, input_shape, gate), None

    if past_key_values is not None and packed:  # packed batches are not recorded in a cache (see gated_deltanet)
        if past_key_values.get_seq_length(self.layer_idx) > 0:
            raise NotImplementedError("cache: continuing a cache with a packed batch is not supported")
    elif past_key_values is not None:
        key, value = past_key_values.update(key, value, self.layer_idx)

    # The mask transformers built is pure causal (or block-causal for packed batches) unless the 2-D mask had
    # padding or the cache has slots without keys (a static cache): fusion_attention (no mask argument) cannot
    # express those, and transformers' attention runs; so it does when the call records attention weights.
    padded = batch.padded if batch is not None else attention_mask is not None
    if padded or weights or (past_key_values is not None and fixed_length(past_key_values, self.layer_idx)):
        interface = binding.masked_attention(self.config._attn_implementation)
        out, attn_weights = interface(self, query, key, value, attention_mask, dropout=0.0, scaling=self.scaling,
                                      **kwargs)
        return _output(self, out, input_shape, gate), attn_weights
    attend = binding.ops["fusion_attention"].fn(packed=packed, T=query.shape[2])
    out = attend(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), causal=True,
                 scale=self.scaling, cu_seqlens=cu_seqlens)
    return _output(self, out, input_shape, gate), None


def _output(self, out, input_shape, gate):
    out = out.reshape(*input_shape, -1).contiguous() * torch.sigmoid(gate)
    return self.o_proj(out)
