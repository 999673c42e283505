"""Public ``fusion_attention``: validation, then the implementation the registry chooses."""
from __future__ import annotations

import torch

from sp_kernels import _checks, _library
from sp_kernels._contexts import choose, requires_grad

OP = "fusion_attention"


def fusion_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
    cu_seqlens: torch.LongTensor | None = None,
    impl: str | None = None,
) -> torch.Tensor:
    r"""Softmax attention with grouped KV heads (the full-attention layers of Qwen3.5 / Qwen3-Next).

    For query head ``h`` (kv head ``g = h // (H // HKV)``, as transformers' ``repeat_kv``)::

        o[i] = sum_j softmax_j(scale * q[i] . k[j]) v[j]     over the keys j query i may see

    Args:
        q: ``[B, TQ, H, D]``. k: ``[B, TK, HKV, D]``. v: ``[B, TK, HKV, DV]``; ``H % HKV == 0``; same dtype/device.
        causal: query ``i`` sees keys ``j <= i + TK - TQ`` (aligned bottom-right, as flash-attn), else all keys.
            With ``TQ > TK`` the first ``TQ - TK`` query rows see no key: their output is defined as **0** (and
            they pass no gradient), as flash-attn does.
        scale: multiplies ``q . k``; default ``D ** -0.5``.
        cu_seqlens: packed sequences ``[0, t1, t1+t2, ..., T]`` (int, 1-D), needs ``B == 1`` and ``TQ == TK``;
            each sequence attends only within itself (a zero-length sequence contributes nothing).
        impl: force an implementation by name (see ``python -m sp_kernels explain``).

    Returns:
        ``o`` ``[B, TQ, H, DV]`` in ``q``'s dtype.
    """
    _checks.tensor("q", q, 4)
    _checks.tensor("k", k, 4)
    _checks.tensor("v", v, 4)
    B, TQ, H, D = q.shape
    TK, HKV = k.shape[1], k.shape[2]
    _checks.shape("k", k, (B, None, None, D), "[B, TK, HKV, D] with q's B and D")
    _checks.same_device_dtype("k", k, "q", q)
    _checks.shape("v", v, (B, TK, HKV, None), "[B, TK, HKV, DV] with k's B, TK and HKV")
    _checks.same_device_dtype("v", v, "q", q)
    DV = v.shape[3]
    if HKV == 0 or H % HKV != 0:
        raise ValueError(f"k: query heads H={H} must be a multiple of the key/value heads HKV={HKV}")
    causal = _checks.flag("causal", causal)
    if D == 0:
        raise ValueError(f"q: expected a head dim D >= 1, got shape {list(q.shape)}")
    scale = _checks.scalar_float("scale", scale, D**-0.5)
    if cu_seqlens is not None and TQ != TK:
        raise ValueError(f"cu_seqlens: packed sequences need as many queries as keys, got TQ={TQ}, TK={TK}")
    cu_seqlens = _checks.cu_seqlens(cu_seqlens, batch=B, total=TQ, device=q.device)

    name = choose(OP, q, {"B": B, "TQ": TQ, "TK": TK, "H": H, "HKV": HKV, "D": D, "DV": DV},
                  packed=cu_seqlens is not None, grad=requires_grad(q, k, v), options={"causal": causal}, impl=impl)
    return LIBRARY_OP(name, q, k, v, causal=causal, scale=scale, cu_seqlens=cu_seqlens)


def _fake(q, k, v, causal, scale, cu_seqlens, impl):
    return q.new_empty(q.shape[:3] + (v.shape[3],))


LIBRARY_OP = _library.define(OP, "Tensor q, Tensor k, Tensor v, bool causal, float scale, Tensor? cu_seqlens",
                             outputs=1, fake=_fake)
