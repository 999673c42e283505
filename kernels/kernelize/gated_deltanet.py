"""The forward kernelize installs on a GatedDeltaNet module (Qwen3.5, Qwen3.5-MoE, Qwen3-Next).

Same parameters and semantics as transformers' forward, but the causal conv and the delta rule are the
implementations bound on the module (``module._sp_kernels``), called directly: transformers' module-level
functions (which send CPU tensors to fla's Triton kernels when fla is installed) are never reached.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.kernelize.batch import BATCH_KWARG


def gated_deltanet_forward(self, hidden_states: torch.Tensor, cache_params=None, attention_mask=None, **kwargs):
    binding = self._sp_kernels
    batch = kwargs.get(BATCH_KWARG)
    cu_seqlens = batch.cu_seqlens if batch is not None else kwargs.get("cu_seq_lens_q")
    packed = cu_seqlens is not None
    if packed:  # a cache does not record packed batches (there is no "next token" of N sequences at once)
        if cache_params is not None and cache_params.get_recurrent_state(self.layer_idx) is not None:
            raise NotImplementedError("cache_params: continuing a cache with a packed batch is not supported")
        cache_params = None
    if attention_mask is not None:  # zero padded positions (2-D mask), as transformers does
        hidden_states = (hidden_states * attention_mask[:, :, None]).to(hidden_states.dtype)

    B, T, _ = hidden_states.shape
    mixed_qkv, z, b, a = binding.project(self, hidden_states)  # [B, T, conv_dim], [B, T, HV, Dv], [B, T, HV] x2

    conv = binding.ops["causal_conv1d"].fn(packed)
    weight = self.conv1d.weight.squeeze(1)
    conv_state = cache_params.get_conv_state(self.layer_idx) if cache_params is not None else None
    if conv_state is not None and T == 1 and not cache_params.is_recording_past(self.layer_idx):
        # one-token decode: the cache holds the last W inputs, our conv state is the last W - 1
        new_input = mixed_qkv.transpose(1, 2)
        mixed_qkv, _ = conv(mixed_qkv, weight, bias=self.conv1d.bias, activation=self.activation,
                            initial_state=conv_state[..., 1:].to(mixed_qkv.dtype), output_final_state=False,
                            cu_seqlens=None)
        conv_state.copy_(torch.cat([conv_state[..., 1:], new_input.to(conv_state.dtype)], dim=-1))
    else:
        if cache_params is not None:  # prefill / chunked prefill: the cache returns [state | new] inputs
            full = cache_params.update_conv_state(mixed_qkv.transpose(1, 2), self.layer_idx,
                                                  conv_kernel_size=self.conv_kernel_size)
            mixed_qkv = full.transpose(1, 2)
        mixed_qkv, _ = conv(mixed_qkv, weight, bias=self.conv1d.bias, activation=self.activation,
                            initial_state=None, output_final_state=False, cu_seqlens=cu_seqlens)
        mixed_qkv = mixed_qkv[:, -T:]

    query, key, value = torch.split(mixed_qkv, [self.key_dim, self.key_dim, self.value_dim], dim=-1)
    query = query.reshape(B, T, -1, self.head_k_dim)
    key = key.reshape(B, T, -1, self.head_k_dim)
    value = value.reshape(B, T, -1, self.head_v_dim)
    beta = b.sigmoid()
    g = -self.A_log.float().exp() * F.softplus(a.float() + self.dt_bias)

    recurrent_state = cache_params.get_recurrent_state(self.layer_idx) if cache_params is not None else None
    delta_rule = binding.ops["chunk_gated_delta_rule"].fn(packed)
    core, last_state = delta_rule(query, key, value, g, beta, scale=self.head_k_dim**-0.5,
                                  initial_state=recurrent_state, output_final_state=cache_params is not None,
                                  cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=True)
    if cache_params is not None:
        cache_params.update_recurrent_state(last_state, self.layer_idx)

    core = self.norm(core.reshape(-1, self.head_v_dim), z.reshape(-1, self.head_v_dim))
    return self.out_proj(core.reshape(B, T, -1))
