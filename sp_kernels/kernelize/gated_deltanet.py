"""The forward kernelize installs on a GatedDeltaNet module (Qwen3.5, Qwen3.5-MoE, Qwen3-Next).

Same parameters and semantics as transformers' forward, but the causal conv and the delta rule are the
implementations bound on the module (``module._sp_kernels``), called directly: transformers' module-level
functions (which send CPU tensors to fla's Triton kernels when fla is installed) are never reached.

Under sequence parallelism the layer runs one of two ways (:class:`GDNShard` or :class:`GDNContext` on the binding):

- **Ulysses** (heads): the projections run on this rank's tokens for all heads; one all-to-all turns that into all
  tokens for this rank's heads (its q/k/v channel blocks, b and a), the conv and the delta rule run over the whole
  sequence with this rank's slices of the conv weight, ``A_log`` and ``dt_bias``, and a second all-to-all brings the
  output back to this rank's tokens for the gated norm and ``out_proj``. Needs the linear heads to divide.
- **Context parallel** (state passing, any head counts): everything runs on this rank's tokens and all heads. The
  conv takes the previous rank's last ``W - 1`` inputs (a halo) as history. Over a segment the delta rule is affine
  in its initial state, ``S_out = A S_in + S_ext``: each rank computes ``(A, S_ext)`` of its last sequence from a
  zero state, all ranks gather them (``[B, HV, K, V + K]`` per rank, whatever the length), and each rank folds those
  of the earlier ranks its first sequence spans into that sequence's initial state. Backward is autograd through
  the same steps (the gathers' backward returns each rank's gradients to it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sp_kernels.kernels.causal_conv1d.update import causal_conv1d_update
from sp_kernels.kernels.chunk_gated_delta_rule.api import compute_dtype
from sp_kernels.kernelize.batch import BATCH_KWARG
from sp_kernels.kernelize.compat import count_decoded_token, recurrent_states_to_keep, the_cache
from sp_kernels.sp.comm import all_to_all, from_every_rank
from sp_kernels.sp.group import SPGroup


@dataclass(frozen=True)
class GDNShard:
    """This rank's share of a GatedDeltaNet: conv channels (q, k, v blocks) and value heads."""

    sp: SPGroup
    channels: torch.Tensor  # int64 indices into the conv channels
    heads: slice  # value heads
    key_dim: int  # local q (= k) channels
    value_dim: int  # local v channels

    @classmethod
    def of(cls, module, sp: SPGroup) -> "GDNShard":
        r, n = sp.rank, sp.size
        hk = module.key_dim // n
        hv = module.value_dim // n
        device = module.conv1d.weight.device
        block = torch.arange(hk, device=device) + r * hk
        channels = torch.cat([block, block + module.key_dim, torch.arange(hv, device=device) + 2 * module.key_dim + r * hv])
        nh = module.num_v_heads // n
        return cls(sp, channels, slice(r * nh, (r + 1) * nh), hk, hv)


@dataclass(frozen=True)
class GDNContext:
    """Context parallelism of a GatedDeltaNet: this rank's tokens, all heads (see the module's docstring)."""

    sp: SPGroup


def gated_deltanet_forward(self, hidden_states: torch.Tensor, cache=None, attention_mask=None, *, cache_params=None,
                           **kwargs):
    """transformers' GatedDeltaNet forward (``cache_params`` is the cache keyword before transformers 5.24)."""
    cache_params = the_cache(cache, cache_params=cache_params)
    binding = self._sp_kernels
    binding.check_device(self, hidden_states)
    batch = kwargs.get(BATCH_KWARG)
    if isinstance(binding.shard, GDNContext):
        return _context_parallel(self, binding, hidden_states, batch, cache_params)
    if binding.shard is not None:
        return _sequence_parallel(self, binding, hidden_states, batch, cache_params)
    cu_seqlens = batch.cu_seqlens if batch is not None else kwargs.get("cu_seq_lens_q")
    packed = cu_seqlens is not None
    if packed:  # a cache does not record packed batches (there is no "next token" of N sequences at once)
        if cache_params is not None and cache_params.get_recurrent_state(self.layer_idx) is not None:
            raise NotImplementedError("cache: continuing a cache with a packed batch is not supported")
        cache_params = None
    if attention_mask is not None:  # zero padded positions (2-D mask), as transformers does
        hidden_states = (hidden_states * attention_mask[:, :, None]).to(hidden_states.dtype)

    B, T, _ = hidden_states.shape
    mixed_qkv, z, b, a = binding.project(self, hidden_states)  # [B, T, conv_dim], [B, T, HV, Dv], [B, T, HV] x2

    weight = self.conv1d.weight.squeeze(1)
    conv_state = cache_params.get_conv_state(self.layer_idx) if cache_params is not None else None
    if conv_state is not None and T == 1 and not cache_params.is_recording_past(self.layer_idx):
        # one-token decode: a step on the cache's last W inputs, in place
        count_decoded_token(cache_params, self.layer_idx)
        x = causal_conv1d_update(mixed_qkv[:, 0], conv_state, weight, self.conv1d.bias, self.activation)
        step = _decode_step_of(binding)
        if step is not None:
            core, state = _decode_step(self, step, x, b, a, cache_params.get_recurrent_state(self.layer_idx))
            cache_params.update_recurrent_state(state, self.layer_idx)
            return _output(self, core, z)
        mixed_qkv = x[:, None]
    else:
        conv = binding.ops["causal_conv1d"].fn(packed=packed, T=T)
        if cache_params is not None:  # prefill / chunked prefill: the cache returns [state | new] inputs
            full = cache_params.update_conv_state(mixed_qkv.transpose(1, 2), self.layer_idx,
                                                  conv_kernel_size=self.conv_kernel_size)
            mixed_qkv = full.transpose(1, 2)
        mixed_qkv, _ = conv(mixed_qkv, weight, bias=self.conv1d.bias, activation=self.activation,
                            initial_state=None, output_final_state=False, cu_seqlens=cu_seqlens)
        mixed_qkv = mixed_qkv[:, -T:]

    recurrent_state = cache_params.get_recurrent_state(self.layer_idx) if cache_params is not None else None
    keep = min(recurrent_states_to_keep(cache_params, self.layer_idx), T) if cache_params is not None else 0
    if keep:
        core, last_state = _delta_rule_keeping_states(self, binding, mixed_qkv, b, a, recurrent_state, keep)
    else:
        core, last_state = _delta_rule(self, binding, mixed_qkv, b, a, initial_state=recurrent_state,
                                       output_final_state=cache_params is not None, cu_seqlens=cu_seqlens)
    if cache_params is not None:
        cache_params.update_recurrent_state(last_state, self.layer_idx)
    return _output(self, core, z)


def _delta_rule(self, binding, mixed_qkv, b, a, *, initial_state, output_final_state: bool, cu_seqlens,
                shard: GDNShard | None = None):
    """``mixed_qkv`` (after the conv) ``[B, T, 2 * key_dim + value_dim]`` -> ``(o [B, T, HV, V], state)``; with
    ``shard``, of this rank's heads (its key channels, ``A_log`` and ``dt_bias``)."""
    heads = slice(None) if shard is None else shard.heads
    A_log, dt_bias = self.A_log[heads], self.dt_bias[heads]
    key_dim = self.key_dim if shard is None else shard.key_dim
    B, T, _ = mixed_qkv.shape
    query, key, value = torch.split(mixed_qkv, [key_dim, key_dim, mixed_qkv.shape[-1] - 2 * key_dim], dim=-1)
    query = query.reshape(B, T, -1, self.head_k_dim)
    key = key.reshape(B, T, -1, self.head_k_dim)
    value = value.reshape(B, T, -1, self.head_v_dim)
    beta, g = _gates(b, a, A_log, dt_bias)
    delta_rule = binding.ops["chunk_gated_delta_rule"].fn(packed=cu_seqlens is not None, T=T)
    return delta_rule(query, key, value, g, beta, scale=self.head_k_dim**-0.5, initial_state=initial_state,
                      output_final_state=output_final_state, cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=True)


def _delta_rule_keeping_states(self, binding, mixed_qkv, b, a, initial_state, keep: int):
    """The delta rule of a cached forward whose last ``keep`` per-token states the cache records: the tokens before
    them in one call, then one call per token. Returns ``(o, [the last keep states])``."""
    T = mixed_qkv.shape[1]
    outs, states, state = [], [], initial_state
    for start, stop in [(0, T - keep)] * (T > keep) + [(t, t + 1) for t in range(T - keep, T)]:
        o, state = _delta_rule(self, binding, mixed_qkv[:, start:stop], b[:, start:stop], a[:, start:stop],
                               initial_state=state, output_final_state=True, cu_seqlens=None)
        outs.append(o)
        if stop - start == 1 and start >= T - keep:
            states.append(state)
    return torch.cat(outs, dim=1), states


def _gates(b, a, A_log, dt_bias):
    """``(beta, g)``: the delta rule's write strength and log decay from the projections ``b``, ``a`` (per value
    head, last dim), as transformers computes them."""
    return b.sigmoid(), -A_log.float().exp() * F.softplus(a.float() + dt_bias)


def _decode_step_of(binding):
    """The bound delta rule's one-token step (``Implementation.decode_step``), where one runs: eager, no autograd."""
    if torch.compiler.is_compiling() or torch.is_grad_enabled():
        return None
    return binding.ops["chunk_gated_delta_rule"].selection(packed=False, T=1).chosen.decode_step


def _decode_step(self, step, x, b, a, recurrent_state):
    """One decoded token after the conv (``x [B, conv_dim]``) by the bound implementation's ``decode_step``: the
    same arithmetic as :func:`_delta_rule`, in fewer ops — query and key viewed in ``x`` (no split, stack or
    repeat), gates shaped per ``[key head, group]``, and the cache's state updated in place (as transformers' cache
    does: it copies each new state into a buffer of fixed address) -> ``(o [B, 1, HV, V], state [B, HV, K, V])``."""
    B = x.shape[0]
    H, HV, K, V = self.num_k_heads, self.num_v_heads, self.head_k_dim, self.head_v_dim
    G = HV // H
    qk = x[:, :2 * self.key_dim].view(B, 2, H, K)
    v = x[:, 2 * self.key_dim:].view(B, H, G, V)
    beta, g = _gates(b.reshape(B, H, G, 1), a.reshape(B, H, G, 1), self.A_log.view(H, G, 1), self.dt_bias.view(H, G, 1))
    dtype = compute_dtype(x.dtype)
    o, state = step(qk, v, g.exp_(), beta, K**-0.5, recurrent_state, True, dtype)
    return o.view(B, 1, HV, V).to(x.dtype), state.view(B, HV, K, V)


def _output(self, core, z):
    B, T = z.shape[:2]
    core = self.norm(core.reshape(-1, self.head_v_dim), z.reshape(-1, self.head_v_dim))
    return self.out_proj(core.reshape(B, T, -1))


def _sequence_parallel(self, binding, hidden_states, batch, cache_params):
    if cache_params is not None:
        raise NotImplementedError("cache: decoding with a cache under sequence parallelism is not supported")
    if batch is None or batch.seq_len is None:
        raise RuntimeError(f"{type(self).__name__} is kernelized for sequence parallelism: call the whole model, "
                           "whose pre-hook shards the batch")
    shard: GDNShard = binding.shard
    n = shard.sp.size
    B, t_local, _ = hidden_states.shape
    mixed_qkv, z, b, a = binding.project(self, hidden_states)
    query, key, value = torch.split(mixed_qkv, [self.key_dim, self.key_dim, self.value_dim], dim=-1)
    # [B, T/N, N, channels of one rank] -> all-to-all -> [B, T, 1, channels of this rank]
    send = torch.cat([t.reshape(B, t_local, n, -1) for t in (query, key, value, b, a)], dim=-1)
    recv = all_to_all(send, scatter_dim=2, gather_dim=1, sp=shard.sp)[:, :, 0]
    nh = shard.heads.stop - shard.heads.start
    mixed_qkv, b, a = torch.split(recv, [2 * shard.key_dim + shard.value_dim, nh, nh], dim=-1)

    T = mixed_qkv.shape[1]
    cu_seqlens = batch.cu_seqlens
    conv = binding.ops["causal_conv1d"].fn(packed=cu_seqlens is not None, T=T)
    weight = self.conv1d.weight.squeeze(1).index_select(0, shard.channels)
    bias = None if self.conv1d.bias is None else self.conv1d.bias.index_select(0, shard.channels)
    mixed_qkv, _ = conv(mixed_qkv, weight, bias=bias, activation=self.activation, initial_state=None,
                        output_final_state=False, cu_seqlens=cu_seqlens)
    core, _ = _delta_rule(self, binding, mixed_qkv, b, a, initial_state=None, output_final_state=False,
                          cu_seqlens=cu_seqlens, shard=shard)
    # [B, T, HV/N, V] -> all-to-all -> [B, T/N, HV, V]
    core = all_to_all(core, scatter_dim=1, gather_dim=2, sp=shard.sp)
    return _output(self, core, z)


def _sp_batch(self, batch, cache_params):
    if cache_params is not None:
        raise NotImplementedError("cache: decoding with a cache under sequence parallelism is not supported")
    if batch is None or batch.seq_len is None:
        raise RuntimeError(f"{type(self).__name__} is kernelized for sequence parallelism: call the whole model, "
                           "whose pre-hook shards the batch")
    return batch


def _context_parallel(self, binding, hidden_states, batch, cache_params):
    sp = binding.shard.sp
    batch = _sp_batch(self, batch, cache_params)
    B, S, _ = hidden_states.shape
    W = self.conv_kernel_size
    segments = _Segments.of(batch.cu_seqlens, sp.rank, S, hidden_states.device)
    packed = segments.cu is not None
    mixed_qkv, z, b, a = binding.project(self, hidden_states)

    # the conv: the W - 1 inputs before this rank's first token as its first sequence's history
    x = torch.cat([_conv_halo(mixed_qkv, W - 1, segments, sp), mixed_qkv], dim=1)
    conv = binding.ops["causal_conv1d"].fn(packed=packed, T=S + W - 1)
    mixed_qkv, _ = conv(x, self.conv1d.weight.squeeze(1), bias=self.conv1d.bias, activation=self.activation,
                        initial_state=None, output_final_state=False,
                        cu_seqlens=segments.cu + (W - 1) * (segments.cu > 0) if packed else None)
    mixed_qkv = mixed_qkv[:, W - 1:]

    query, key, value = torch.split(mixed_qkv, [self.key_dim, self.key_dim, self.value_dim], dim=-1)
    query = query.reshape(B, S, -1, self.head_k_dim)
    key = key.reshape(B, S, -1, self.head_k_dim)
    value = value.reshape(B, S, -1, self.head_v_dim)
    beta, g = _gates(b, a, self.A_log, self.dt_bias)
    scale = self.head_k_dim**-0.5
    state = _first_state(binding, query, key, value, g, beta, scale, segments, sp)
    initial = state if not packed else state * (
        torch.arange(segments.cu.numel() - 1, device=state.device) == segments.first)[:, None, None, None]
    delta_rule = binding.ops["chunk_gated_delta_rule"].fn(packed=packed, T=S)
    core, _ = delta_rule(query, key, value, g, beta, scale=scale, initial_state=initial, output_final_state=False,
                         cu_seqlens=segments.cu, use_qk_l2norm_in_kernel=True)
    return _output(self, core, z)


def _first_state(binding, query, key, value, g, beta, scale, segments: "_Segments", sp: SPGroup) -> torch.Tensor:
    """The state this rank's first sequence starts from ``[B, HV, K, V]``: each rank's ``(A, S_ext)`` of its last
    sequence from a zero state — one chunked call with state ``[0 | I]`` and values ``[v | 0]`` — gathered, and
    those of the earlier ranks the first sequence spans folded in rank order (zeros where it starts here)."""
    B, S, HV, V = value.shape
    K = key.shape[-1]
    if torch.compiler.is_compiling():  # positions are data while tracing: the tokens before the last sequence
        keep = (torch.arange(S, device=g.device) >= segments.last_start).to(g.dtype)[None, :, None]
        tokens, g, beta = slice(0, S), g * keep, beta * keep  # become identities (no decay, no update)
    else:
        tokens = slice(int(segments.last_start), S)
    n = S - tokens.start
    eye = torch.eye(K, dtype=compute_dtype(value.dtype), device=value.device).expand(B, HV, K, K)
    delta_rule = binding.ops["chunk_gated_delta_rule"].fn(packed=False, T=n)
    _, transfer = delta_rule(
        query[:, tokens], key[:, tokens], torch.cat([value[:, tokens], value.new_zeros(B, n, HV, K)], dim=-1),
        g[:, tokens], beta[:, tokens], scale=scale, initial_state=torch.cat([eye.new_zeros(B, HV, K, V), eye], -1),
        output_final_state=True, cu_seqlens=None, use_qk_l2norm_in_kernel=True)  # [B, HV, K, V + K] = [S_ext | A]
    every = from_every_rank(transfer, sp)  # [N, B, HV, K, V + K]
    first_rank = segments.start // S  # where the first local token's sequence began
    continues = segments.start < sp.rank * S
    state = every[0, ..., :V] * 0.0
    for j in range(sp.rank):
        state = torch.where((j >= first_rank) & continues, every[j, ..., V:] @ state + every[j, ..., :V], state)
    return state


def _conv_halo(mixed_qkv: torch.Tensor, width: int, segments: "_Segments", sp: SPGroup) -> torch.Tensor:
    """The ``width`` conv inputs before this rank's first token, zero where they precede its first sequence (or the
    row): every rank's last ``min(S, width)`` inputs, gathered, so the history may span several earlier ranks when
    ranks hold fewer tokens than it. Every rank's halo depends on the gather (with zero weight where it uses
    nothing of it): its backward is a collective that every rank must join."""
    B, S, C = mixed_qkv.shape
    L = min(S, width)
    tails = from_every_rank(mixed_qkv[:, S - L:], sp)  # [N, B, L, C]
    # the tails in rank order, after `width` zero rows: rows [r * L, r * L + width) are the `width` before rank r
    history = torch.cat([mixed_qkv.new_zeros(B, width, C), *tails.unbind(0)], dim=1)
    halo = history[:, sp.rank * L:sp.rank * L + width]
    first = sp.rank * S  # the global position of this rank's first token
    before = torch.arange(first - width, first, device=halo.device) < segments.start
    return halo.masked_fill(before[None, :, None], 0)


@dataclass(frozen=True)
class _Segments:
    """This rank's tokens ``[lo, lo + S)``, ``lo = rank * S``, against the global sequences, as tensors (computed
    from the boundaries' values without reading them, so they trace):

    - ``cu``: the local boundaries ``[n + 1]`` — the global ones clamped to this rank, so a sequence outside it is
      empty here — or ``None`` (each row one sequence over every rank);
    - ``start``: the global position where the first local token's sequence starts (``< lo``: it continues);
    - ``last_start``: the local position where the last local sequence starts;
    - ``first``: the index in ``cu`` of the sequence holding the first local token.
    """

    cu: torch.Tensor | None
    start: torch.Tensor
    last_start: torch.Tensor
    first: torch.Tensor | None

    @classmethod
    def of(cls, cu_seqlens, rank: int, S: int, device: torch.device) -> "_Segments":
        if cu_seqlens is None:
            zero = torch.zeros((), dtype=torch.long, device=device)
            return cls(None, zero, zero, None)
        lo, hi = rank * S, (rank + 1) * S
        cu = cu_seqlens.clamp(lo, hi) - lo
        start = torch.where(cu_seqlens <= lo, cu_seqlens, 0).amax()
        last_start = torch.where(cu_seqlens < hi, cu_seqlens, 0).amax().clamp(min=lo) - lo
        return cls(cu, start, last_start, (cu == 0).sum() - 1)
