"""Chunked ``chunk_gated_delta_rule`` in plain torch (any device; the CPU fallback).

The sequence is cut into chunks of ``C = 64`` tokens. Inside a chunk the delta-rule updates are folded into a
few batched matmuls with the WY / UT transform (as flash-linear-attention and transformers'
``torch_chunk_gated_delta_rule``); only the state is carried from chunk to chunk by a short sequential scan.

With ``gamma_i = exp(sum_{s <= i} g_s)`` inside a chunk and ``S0`` its incoming state (row-vector convention,
``S`` is ``[K, V]``)::

    A[i, j] = beta_i k_i.k_j gamma_i / gamma_j          (j < i)
    (I + A) U = beta V - (beta gamma K) S0               -> U = u - w S0, [u | w] = (I + A)^-1 [beta V | beta gamma K]
    o_i     = gamma_i q_i S0 + sum_{j <= i} (q_i.k_j) gamma_i / gamma_j U_j
    S_C     = gamma_C S0 + sum_j (gamma_C / gamma_j) k_j U_j^T

The algorithm, forward and its hand-written backward, is ``chunk_autograd.ChunkGatedDeltaRule``: intra-chunk
work is batched over blocks of chunks, only the state is scanned chunk by chunk (forward, and in reverse for
the gradients). This module pads (``T`` to a multiple of ``C``, packed sequences to a batch) around it, and
splits it at its saved tensors for torch.compile (:func:`forward_saving`, :func:`backward_saved`).
"""
from __future__ import annotations

import torch

from sp_kernels import _varlen
from sp_kernels.kernels.chunk_gated_delta_rule.api import compute_dtype
from sp_kernels.kernels.chunk_gated_delta_rule.chunk_autograd import (CHUNK, ChunkGatedDeltaRule, chunk_backward,
                                                                       chunk_forward)


def chunk_gated_delta_rule_torch(
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
    r"""Chunked gated delta rule in torch ops (see ``sp_kernels/kernels/chunk_gated_delta_rule/api.py`` for the
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

    Computes in float32 (float64 for float64 inputs). Packed sequences are padded to ``[N, L]`` with ``L`` a
    multiple of ``C``; zero tokens (k = 0, beta = 0, g = 0, also after l2norm) leave the state unchanged, so the
    padding is exact.
    """
    dtype = compute_dtype(q.dtype)
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    out_dtype = v.dtype
    q, k, v, g, beta = (x.to(dtype) for x in (q, k, v, g, beta))

    if cu_seqlens is not None:  # [1, T] packed -> [N, L] padded batch
        q, k, v, g, beta = (_varlen.pad(x[0], cu_seqlens, multiple=CHUNK) for x in (q, k, v, g, beta))
    length = q.shape[1]
    padded = max(CHUNK, -(-length // CHUNK) * CHUNK)
    if padded != length:  # zero tail: every row of [B, T, ...] padded along T
        q, k, v, g, beta = (
            torch.cat([x, x.new_zeros((x.shape[0], padded - length) + tuple(x.shape[2:]))], dim=1)
            for x in (q, k, v, g, beta)
        )

    N = q.shape[0]
    if initial_state is None:
        state = q.new_zeros(N, HV, K, V)
    else:
        state = initial_state.to(dtype)
    o, state = ChunkGatedDeltaRule.apply(q, k, v, g, beta, state, scale, use_qk_l2norm_in_kernel)

    if cu_seqlens is not None:
        o = _varlen.unpad(o, cu_seqlens).unsqueeze(0)
    else:
        o = o[:, :T]
    return o.to(out_dtype), (state if output_final_state else None)


def _padded(T: int) -> int:
    return max(CHUNK, -(-T // CHUNK) * CHUNK)


def _pad_time(x: torch.Tensor, T: int) -> torch.Tensor:
    """``x [B, t, ...]`` with zeros after ``t`` up to ``T`` tokens."""
    if x.shape[1] == T:
        return x
    return torch.cat([x, x.new_zeros((x.shape[0], T - x.shape[1]) + tuple(x.shape[2:]))], dim=1)


def forward_saving(q, k, v, g, beta, scale, initial_state=None, output_final_state=False, cu_seqlens=None,
                   use_qk_l2norm_in_kernel=False):
    """``((o, final_state), saved)``: :func:`chunk_gated_delta_rule_torch` of an ordinary batch, without autograd,
    and the tensors :func:`backward_saved` needs (those ``ChunkGatedDeltaRule`` saves)."""
    if cu_seqlens is not None:
        raise ValueError("cu_seqlens: forward_saving takes ordinary batches (packed shapes follow the boundaries)")
    dtype = compute_dtype(q.dtype)
    B, T, H, K = q.shape
    HV, V = v.shape[2:]
    padded = _padded(T)
    q_, k_, v_, g_, beta_ = (_pad_time(x.to(dtype), padded) for x in (q, k, v, g, beta))
    state = q_.new_zeros(B, HV, K, V) if initial_state is None else initial_state.to(dtype)
    o, final, saved = chunk_forward(q_, k_, v_, g_, beta_, state, scale, use_qk_l2norm_in_kernel)
    return (o[:, :T].to(v.dtype), final if output_final_state else None), saved


def backward_saved(saved, grads, needs, q, k, v, g, beta, scale, initial_state=None, output_final_state=False,
                   cu_seqlens=None, use_qk_l2norm_in_kernel=False):
    """The gradients of :func:`forward_saving`'s tensor arguments (``q, k, v, g, beta, initial_state,
    cu_seqlens``; ``None`` where ``needs`` says no) from its ``saved`` tensors and its outputs' ``grads``."""
    do, dfinal = grads
    dtype = compute_dtype(q.dtype)
    B, T, H, K = q.shape
    do = q.new_zeros(v.shape, dtype=dtype) if do is None else do.to(dtype)
    dstate = dfinal.to(dtype) if dfinal is not None and output_final_state else None
    dq, dk, dv, dg, dbeta, dstate_in = chunk_backward(saved, _pad_time(do, _padded(T)), dstate, scale,
                                                      use_qk_l2norm_in_kernel, H, K)
    got = [d[:, :T].to(x.dtype) for d, x in zip((dq, dk, dv, dg, dbeta), (q, k, v, g, beta))]
    got += [None if initial_state is None else dstate_in.to(initial_state.dtype), None]
    return [d if need else None for d, need in zip(got, needs)]
