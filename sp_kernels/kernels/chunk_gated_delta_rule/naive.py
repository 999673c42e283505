"""Reference ``chunk_gated_delta_rule``: the plain per-token recurrence (float64-capable, differentiable).

Slow on purpose: it is what the other implementations are tested against. It never writes into tensors that
need grad, so autograd through it gives the reference gradients too.
"""
from __future__ import annotations

import torch

from sp_kernels.kernels.chunk_gated_delta_rule.api import compute_dtype


def _l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / sqrt(sum(x^2) + eps)`` over the last dimension (as fla and transformers)."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def _recurrence(q, k, v, g, beta, state):
    """One sequence.

    Args:
        q, k: ``[B, T, HV, K]`` (heads already repeated, scaled and normalised). v: ``[B, T, HV, V]``.
        g, beta: ``[B, T, HV]``. state: ``[B, HV, K, V]``.

    Returns:
        o ``[B, T, HV, V]`` and the state after the last token ``[B, HV, K, V]``.
    """
    outputs = []
    for t in range(q.shape[1]):
        q_t, k_t, v_t = q[:, t], k[:, t], v[:, t]  # [B, HV, K|V]
        state = state * g[:, t].exp()[..., None, None]  # S = exp(g_t) S
        predicted = torch.einsum("bhkv,bhk->bhv", state, k_t)  # S^T k_t
        delta = beta[:, t, :, None] * (v_t - predicted)  # beta_t (v_t - S^T k_t)
        state = state + k_t[..., :, None] * delta[..., None, :]  # S + k_t delta^T
        outputs.append(torch.einsum("bhkv,bhk->bhv", state, q_t))  # S^T q_t
    if not outputs:
        return v.new_zeros(v.shape), state
    return torch.stack(outputs, dim=1), state


def naive_recurrent_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
    use_qk_l2norm_in_kernel: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Gated delta rule, one token at a time (see ``sp_kernels/kernels/chunk_gated_delta_rule/api.py`` for the
    contract).

    Args:
        q, k: ``[B, T, H, K]``. v: ``[B, T, HV, V]``, ``HV % H == 0``. g, beta: ``[B, T, HV]``.
        scale: multiplies ``q``. initial_state: ``[N, HV, K, V]`` or ``None`` (zeros).
        output_final_state: return the final state of each sequence.
        cu_seqlens: ``[N + 1]`` int64 packed-sequence boundaries (``B == 1``), or ``None``.
        use_qk_l2norm_in_kernel: L2-normalise ``q`` and ``k`` over ``K`` (eps 1e-6) first.

    Returns:
        o ``[B, T, HV, V]`` in ``v.dtype``; final state ``[N, HV, K, V]`` (float64 for float64 inputs, else
        float32) or ``None``.
    """
    dtype = compute_dtype(q.dtype)
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    out_dtype = v.dtype
    q, k, v, g, beta = (x.to(dtype) for x in (q, k, v, g, beta))
    if use_qk_l2norm_in_kernel:
        q, k = _l2norm(q), _l2norm(k)
    q = q * scale
    if HV != H:  # query/key head h serves value heads h*G .. h*G + G-1
        q, k = (x.repeat_interleave(HV // H, dim=2) for x in (q, k))

    if cu_seqlens is None:
        bounds = [(slice(None), slice(None))]
        states = [initial_state.to(dtype) if initial_state is not None else v.new_zeros(B, HV, K, V)]
    else:
        cu = cu_seqlens.tolist()
        bounds = [(slice(0, 1), slice(s, e)) for s, e in zip(cu[:-1], cu[1:])]
        states = [
            initial_state[n : n + 1].to(dtype) if initial_state is not None else v.new_zeros(1, HV, K, V)
            for n in range(len(bounds))
        ]

    outputs, finals = [], []
    for (b, t), state in zip(bounds, states):
        o, final = _recurrence(q[b, t], k[b, t], v[b, t], g[b, t], beta[b, t], state)
        outputs.append(o)
        finals.append(final)
    o = torch.cat(outputs, dim=1).to(out_dtype)
    return o, (torch.cat(finals, dim=0) if output_final_state else None)
