"""Public ``chunk_gated_delta_rule``: validation, then the implementation the registry chooses."""
from __future__ import annotations

import torch

from sp_kernels import _checks, _library
from sp_kernels._contexts import choose, requires_grad

OP = "chunk_gated_delta_rule"


def chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
    use_qk_l2norm_in_kernel: bool = False,
    *,
    impl: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Gated delta rule over a sequence (flash-linear-attention's contract).

    For each value head, with state ``S`` of shape ``[K, V]`` (starting from ``initial_state`` or zeros)::

        S_t = exp(g_t) * S_{t-1} + beta_t * k_t (v_t - exp(g_t) * S_{t-1}^T k_t)^T
        o_t = S_t^T (scale * q_t)

    Args:
        q, k: ``[B, T, H, K]``. v: ``[B, T, HV, V]`` with ``HV % H == 0``; query/key head ``h`` serves value heads
            ``h * HV/H ... (h+1) * HV/H - 1`` (grouped value heads).
        g: ``[B, T, HV]`` log-space decay (``<= 0``). beta: ``[B, T, HV]``.
        scale: multiplies ``q``; default ``K ** -0.5``.
        initial_state: ``[N, HV, K, V]``, ``N = B`` or the number of packed sequences.
        output_final_state: return the state after the last token of each sequence.
        cu_seqlens: packed sequences ``[0, t1, t1+t2, ..., T]`` (int, 1-D) with ``B == 1``; each sequence starts
            from its own initial state and sees no other sequence.
        use_qk_l2norm_in_kernel: L2-normalise ``q`` and ``k`` over ``K`` first (eps 1e-6, as fla).
        impl: force an implementation by name (see ``python -m sp_kernels explain``).

    Returns:
        ``o`` ``[B, T, HV, V]`` in ``v``'s dtype, and the final state ``[N, HV, K, V]`` (float32, or float64 for
        float64 inputs) or ``None``.
    """
    _checks.tensor("q", q, 4)
    _checks.tensor("k", k, 4)
    _checks.tensor("v", v, 4)
    B, T, H, K = q.shape
    _checks.shape("k", k, (B, T, H, K), "(same as q)")
    _checks.same_device_dtype("k", k, "q", q)
    _checks.same_device_dtype("v", v, "q", q)
    HV, V = v.shape[2], v.shape[3]
    _checks.shape("v", v, (B, T, None, None), "[B, T, HV, V] with q's B and T")
    if H == 0 or HV % H != 0:
        raise ValueError(f"v: value heads HV={HV} must be a multiple of the query/key heads H={H}")
    for name, t in (("g", g), ("beta", beta)):
        _checks.tensor(name, t, 3)
        _checks.shape(name, t, (B, T, HV), "[B, T, HV]")
        _checks.same_device_dtype(name, t, "q", q, dtype=False)
    if K == 0:
        raise ValueError(f"q: expected a head dim K >= 1, got shape {list(q.shape)}")
    scale = _checks.scalar_float("scale", scale, K**-0.5)
    output_final_state = _checks.flag("output_final_state", output_final_state)
    use_qk_l2norm_in_kernel = _checks.flag("use_qk_l2norm_in_kernel", use_qk_l2norm_in_kernel)
    cu_seqlens = _checks.cu_seqlens(cu_seqlens, batch=B, total=T, device=q.device)
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    if initial_state is not None:
        _checks.tensor("initial_state", initial_state, 4)
        _checks.shape("initial_state", initial_state, (N, HV, K, V), "[N, HV, K, V] (N sequences)")
        _checks.same_device_dtype("initial_state", initial_state, "q", q, dtype=False)

    name = choose(OP, q, {"B": B, "T": T, "H": H, "HV": HV, "K": K, "V": V}, packed=cu_seqlens is not None,
                  grad=requires_grad(q, k, v, g, beta, initial_state), impl=impl)
    return LIBRARY_OP(name, q, k, v, g, beta, scale=scale, initial_state=initial_state,
                      output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                      use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the delta rule computes and keeps its state in: float64 for float64 inputs, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fake(q, k, v, g, beta, scale, initial_state, output_final_state, cu_seqlens, use_qk_l2norm_in_kernel, impl):
    B, T, HV, V = v.shape
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    state = q.new_empty((N, HV, q.shape[3], V) if output_final_state else (0,), dtype=compute_dtype(q.dtype))
    return v.new_empty(v.shape), state


LIBRARY_OP = _library.define(
    OP, "Tensor q, Tensor k, Tensor v, Tensor g, Tensor beta, float scale, Tensor? initial_state, "
    "bool output_final_state, Tensor? cu_seqlens, bool use_qk_l2norm_in_kernel", outputs=2, fake=_fake,
    optional_outputs=(1,))
