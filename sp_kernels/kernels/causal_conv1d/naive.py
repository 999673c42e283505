"""Reference causal conv: the definition, one time step and one tap at a time (float64-capable)."""
from __future__ import annotations

import torch
import torch.nn.functional as F



def causal_conv1d_reference(
    x, weight, bias=None, activation=None, initial_state=None, output_final_state=False, cu_seqlens=None
):
    """Validated arguments as :func:`sp_kernels.causal_conv1d`; computes in at least float32."""
    B, T, D = x.shape
    W = weight.shape[1]
    acc = torch.promote_types(x.dtype, torch.float32)
    if cu_seqlens is None:
        seqs = [(b, 0, T) for b in range(B)]  # (batch row, start, end)
    else:
        bounds = cu_seqlens.tolist()
        seqs = [(0, s, e) for s, e in zip(bounds, bounds[1:])]
    ys, finals = [], []
    for n, (b, start, end) in enumerate(seqs):
        if initial_state is None:
            left = x.new_zeros((D, W - 1), dtype=acc)
        else:
            left = initial_state[n].to(acc)
        # ctx[:, s] is the input s - (W - 1) steps from the sequence start.
        ctx = torch.cat([left, x[b, start:end].to(acc).t()], dim=1)
        rows = []
        for t in range(end - start):
            out = torch.zeros(D, dtype=acc, device=x.device) if bias is None else bias.to(acc)
            for w in range(W):
                out = out + weight[:, w].to(acc) * ctx[:, t + w]
            if activation in ("silu", "swish"):
                out = F.silu(out)
            rows.append(out)
        ys.append(torch.stack(rows) if rows else x.new_zeros((0, D), dtype=acc))
        finals.append(ctx[:, end - start : end - start + W - 1])
    if cu_seqlens is None:
        y = torch.stack(ys)
    else:
        y = torch.cat(ys).unsqueeze(0)
    final = torch.stack(finals).to(x.dtype) if output_final_state else None
    return y.to(x.dtype), final
