"""The launcher of our Triton fused recurrent gated delta rule (forward only): it runs the
:class:`~sp_kernels.dispatch.ub.Launch` :func:`.triton_plan.plan` returns for the call — its tile and its grid."""
from __future__ import annotations

from typing import Mapping

import torch

from sp_kernels.dispatch.devices import detect
from sp_kernels._varlen import sequences
from sp_kernels.kernels.chunk_gated_delta_rule import triton_plan
from sp_kernels.kernels.chunk_gated_delta_rule.triton_kernels import fused_recurrent_gdr_fwd_kernel


def constexprs(tile: Mapping[str, int], *, has_h0: bool, store_final: bool, l2norm: bool) -> dict:
    """The kernel's ``tl.constexpr`` arguments for a launch's ``tile`` (``{"BK", "BV"}``)."""
    return dict(BK=tile["BK"], BV=tile["BV"], HAS_H0=has_h0, STORE_FINAL=store_final, L2NORM=l2norm)


def fused_recurrent_gated_delta_rule_triton(q, k, v, g, beta, scale, initial_state=None, output_final_state=False,
                                            cu_seqlens=None, use_qk_l2norm_in_kernel=False, *,
                                            tile: dict | None = None):
    """Validated arguments as :func:`sp_kernels.chunk_gated_delta_rule`; forward only (outputs carry no graph).

    Returns ``o`` ``[B, T, HV, V]`` in ``v``'s dtype and the final state ``[N, HV, K, V]`` float32 (or ``None``).
    ``tile`` (tests) overrides the choice: ``{"BV"[, "grid"]}``.
    """
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    q, k, v, g, beta = (x.detach().contiguous() for x in (q, k, v, g, beta))
    starts, lens = sequences(B, T, cu_seqlens)
    N = len(lens)
    launch = triton_plan.plan(detect(q.device), N, HV, K, V, q.dtype, tile=tile)
    o = torch.empty(B, T, HV, V, dtype=v.dtype, device=v.device)
    h0 = initial_state.detach().contiguous() if initial_state is not None else None
    ht = torch.empty(N, HV, K, V, dtype=torch.float32, device=q.device) if output_final_state else None
    seq_bos = torch.tensor(starts, dtype=torch.int32, device=q.device)
    seq_len = torch.tensor(lens, dtype=torch.int32, device=q.device)
    if N * HV * V * K:
        fused_recurrent_gdr_fwd_kernel[(launch.grid,)](
            q, k, v, g, beta, o, h0 if h0 is not None else q, ht if ht is not None else o, seq_bos, seq_len,
            float(scale), N, H, HV, K, V,
            **constexprs(launch.tile, has_h0=h0 is not None, store_final=ht is not None,
                         l2norm=bool(use_qk_l2norm_in_kernel)),
        )
    elif ht is not None:
        ht.zero_()
        if h0 is not None:
            ht.copy_(h0)
    return o, ht
