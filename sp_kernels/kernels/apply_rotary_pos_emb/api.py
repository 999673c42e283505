"""Public ``apply_rotary_pos_emb``: validation, then the implementation the registry chooses."""
from __future__ import annotations

import torch

from sp_kernels import _checks, _library
from sp_kernels._contexts import choose, requires_grad

OP = "apply_rotary_pos_emb"


def apply_rotary_pos_emb(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    unsqueeze_dim: int = 1,
    *,
    impl: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Rotary position embedding, transformers' contract (``rotate_half`` convention), with partial rotary.

    With ``R = cos.shape[-1]`` (the rotary dim, even, ``<= D``), only the first ``R`` dims of each head rotate;
    for ``i < R/2``::

        out[i]       = x[i] * cos[i]           - x[i + R/2] * sin[i]
        out[i + R/2] = x[i + R/2] * cos[i + R/2] + x[i] * sin[i + R/2]

    and ``out[R:] = x[R:]`` (passed through unchanged).

    Args:
        q: ``[B, H, T, D]`` (``unsqueeze_dim=1``) or ``[B, T, H, D]`` (``unsqueeze_dim=2``).
        k: ``[B, HK, T, D]`` or ``[B, T, HK, D]``, same dtype as ``q``; ``HK`` may differ from ``H``.
        cos, sin: ``[B, T, R]`` or ``[1, T, R]`` (broadcast over the batch), same shape and dtype as each other.
        unsqueeze_dim: where the head axis is, 1 or 2 (as in transformers).
        impl: force an implementation by name (see ``python -m sp_kernels explain``).

    Returns:
        ``(q_out, k_out)`` with ``q``'s and ``k``'s shapes. Their dtype follows torch type promotion exactly as
        transformers does: ``torch.promote_types(q.dtype, cos.dtype)`` (so bf16 ``q`` with fp32 ``cos`` gives
        fp32 outputs, as transformers' ``apply_rotary_pos_emb`` does).
    """
    _checks.tensor("q", q, 4)
    _checks.tensor("k", k, 4)
    _checks.tensor("cos", cos, 3)
    _checks.tensor("sin", sin, 3)
    if isinstance(unsqueeze_dim, bool) or not isinstance(unsqueeze_dim, int) or unsqueeze_dim not in (1, 2):
        raise ValueError(f"unsqueeze_dim: expected 1 ([B, H, T, D]) or 2 ([B, T, H, D]), got {unsqueeze_dim!r}")
    if unsqueeze_dim == 1:
        B, H, T, D = q.shape
        HK = k.shape[1]
        _checks.shape("k", k, (B, None, T, D), "[B, HK, T, D] with q's B, T and D")
    else:
        B, T, H, D = q.shape
        HK = k.shape[2]
        _checks.shape("k", k, (B, T, None, D), "[B, T, HK, D] with q's B, T and D")
    _checks.same_device_dtype("k", k, "q", q)
    R = cos.shape[-1]
    if cos.shape[0] not in (1, B) or cos.shape[1] != T:
        raise ValueError(f"cos: expected shape [B or 1, T, R] with B={B}, T={T}, got {list(cos.shape)}")
    _checks.shape("sin", sin, tuple(cos.shape), "(same as cos)")
    _checks.same_device_dtype("cos", cos, "q", q, dtype=False)
    _checks.same_device_dtype("sin", sin, "cos", cos)
    if R % 2 != 0:
        raise ValueError(f"cos: rotary dim R = cos.shape[-1] must be even, got {R}")
    if R > D:
        raise ValueError(f"cos: rotary dim R = cos.shape[-1] = {R} exceeds the head dim D = {D}")

    name = choose(OP, q, {"B": B, "T": T, "H": H, "HK": HK, "D": D, "R": R}, grad=requires_grad(q, k, cos, sin),
                  options={"unsqueeze_dim": unsqueeze_dim}, impl=impl)
    return LIBRARY_OP(name, q, k, cos, sin, unsqueeze_dim=unsqueeze_dim)


def _fake(q, k, cos, sin, unsqueeze_dim, impl):
    return q.new_empty(q.shape), k.new_empty(k.shape)


LIBRARY_OP = _library.define(OP, "Tensor q, Tensor k, Tensor cos, Tensor sin, int unsqueeze_dim", outputs=2,
                             fake=_fake)
