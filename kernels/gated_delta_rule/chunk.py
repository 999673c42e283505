"""Chunked ``chunk_gated_delta_rule`` in plain torch (any device; the CPU fallback).

The sequence is cut into chunks of ``C = 64`` tokens. Inside a chunk the delta-rule updates are folded into a
few batched matmuls with the WY / UT transform (as flash-linear-attention and transformers'
``torch_chunk_gated_delta_rule``); only the state is carried from chunk to chunk by a short sequential scan.

With ``gamma_i = exp(sum_{s <= i} g_s)`` inside a chunk and ``S0`` its incoming state (row-vector convention,
``S`` is ``[K, V]``)::

    A[i, j] = beta_i k_i.k_j gamma_i / gamma_j          (j < i)
    (I + A) U = beta V - (beta gamma K) S0               -> U = u - w S0, u and w by one triangular solve
    o_i     = gamma_i q_i S0 + sum_{j <= i} (q_i.k_j) gamma_i / gamma_j U_j
    S_C     = gamma_C S0 + sum_j (gamma_C / gamma_j) k_j U_j^T

Everything but ``U = u - w S0`` and the state update is batched over all chunks at once. No tensor is written
in place, so autograd's backward is the same handful of batched ops (no per-chunk zero-filled buffers).
"""
from __future__ import annotations

import torch

from kernels import _varlen

CHUNK = 64


def _l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / sqrt(sum(x^2) + eps)`` over the last dimension (fla / transformers). Zero stays zero."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def _to_chunks(x: torch.Tensor, heads: int, dtype: torch.dtype) -> torch.Tensor:
    """``[B, T, HV, *D]`` -> ``[NC, B, H, G, C, *D]`` in ``dtype`` (``T`` a multiple of ``C``, ``HV = H * G``)."""
    B, T, HV = x.shape[:3]
    x = x.to(dtype).reshape((B, T // CHUNK, CHUNK, heads, HV // heads) + tuple(x.shape[3:]))
    order = (1, 0, 3, 4, 2) + tuple(range(5, x.dim()))
    return x.permute(order).contiguous()


def _chunked(q, k, v, g, beta, state):
    """The chunked recurrence over a padded batch.

    Args:
        q, k: ``[B, T, H, K]`` already normalised and scaled, ``T`` a multiple of ``C``. v: ``[B, T, HV, V]``.
        g, beta: ``[B, T, HV]``. state: ``[B, HV, K, V]``. All in the compute dtype.

    Returns:
        o ``[B, T, HV, V]`` and the final state ``[B, HV, K, V]`` (compute dtype).
    """
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    dtype = q.dtype
    q, k = _to_chunks(q, H, dtype), _to_chunks(k, H, dtype)  # [NC, B, H, 1, C, K]: shared by the G value heads
    v = _to_chunks(v, H, dtype)  # [NC, B, H, G, C, V]
    g, beta = _to_chunks(g, H, dtype), _to_chunks(beta, H, dtype)  # [NC, B, H, G, C]

    gc = g.cumsum(-1)  # log gamma
    future = torch.ones(CHUNK, CHUNK, dtype=torch.bool, device=q.device).triu(1)
    # gamma_i / gamma_j on and below the diagonal, 0 above (masked before exp: no overflow, no NaN gradient)
    decay = (gc[..., :, None] - gc[..., None, :]).masked_fill(future, float("-inf")).exp()  # [NC, B, H, G, C, C]
    kt = k.transpose(-1, -2)
    # A (its diagonal is ignored by the unitriangular solve; above the diagonal decay is 0)
    a = (k @ kt) * decay * beta[..., :, None]
    attn = (q @ kt) * decay  # causal intra-chunk attention, diagonal included
    rhs = torch.cat([v * beta[..., None], k * (beta * gc.exp())[..., None]], dim=-1)
    u, w = torch.linalg.solve_triangular(a, rhs, upper=False, unitriangular=True).split([V, K], dim=-1)
    k_to_end = k * (gc[..., -1:] - gc).exp()[..., None]  # gamma_C / gamma_j k_j
    chunk_decay = gc[..., -1].exp()[..., None, None]  # gamma_C: [NC, B, H, G, 1, 1]

    # The only sequential part: the state entering each chunk and the corrected values U.
    state = state.reshape(B, H, HV // H, K, V)
    entering, values = [], []
    for u_n, w_n, k_n, d_n in zip(u.unbind(0), w.unbind(0), k_to_end.unbind(0), chunk_decay.unbind(0)):
        entering.append(state)
        u_n = u_n - w_n @ state
        values.append(u_n)
        state = state * d_n + k_n.transpose(-1, -2) @ u_n
    entering, values = torch.stack(entering), torch.stack(values)  # [NC, B, H, G, K|C, V]

    o = (q * gc.exp()[..., None]) @ entering + attn @ values  # [NC, B, H, G, C, V]
    o = o.permute(1, 0, 4, 2, 3, 5).reshape(B, T, HV, V)
    return o, state.reshape(B, HV, K, V)


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
    r"""Chunked gated delta rule in torch ops (see ``kernels.gated_delta_rule.api`` for the contract).

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
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    out_dtype = v.dtype
    q, k, v, g, beta = (x.to(dtype) for x in (q, k, v, g, beta))
    if use_qk_l2norm_in_kernel:
        q, k = _l2norm(q), _l2norm(k)
    q = q * scale

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
    o, state = _chunked(q, k, v, g, beta, state)

    if cu_seqlens is not None:
        o = _varlen.unpad(o, cu_seqlens).unsqueeze(0)
    else:
        o = o[:, :T]
    return o.to(out_dtype), (state if output_final_state else None)
