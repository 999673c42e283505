"""``chunk_gated_delta_rule`` for short inputs (decoding) in plain torch: the recurrence stepped token by token.

A decoded token is one step of the recurrence; the chunked path (``chunk.py``) would pad it to a 64-token chunk
and build that chunk's WY transform. Here each token costs one batched matmul against the state, for the query
and the key at once, and one rank-1 update of the state::

    [S^T q, S^T k] = S_{t-1}^T [q | k]                 (one bmm, before the decay)
    delta = beta (v - e^g S_{t-1}^T k)
    o     = e^g S_{t-1}^T q + (q . k) delta            (= S_t^T q)
    S_t   = e^g S_{t-1} + k delta^T                    (in place when no gradient is needed)

The state is kept as ``[N * HV, K, V]``, the layout of ``initial_state``: no permutes. Differentiable (out of place
when autograd records), float32 (float64 for float64 inputs).
"""
from __future__ import annotations

import torch

from sp_kernels.kernels.chunk_gated_delta_rule.api import compute_dtype

#: The longest input this path takes: stepping costs ~T small launches, the chunked path a padded chunk's
#: batched matmuls. The crossover measured on this 2-core CPU (fp32, HV=8, K=V=128) is at T ~ 24-32 tokens;
#: 16 leaves a margin of ~1.5x (``bench/bench_decode.py``).
MAX_T = 16
_EPS = 1e-6  # l2norm: x / sqrt(sum(x^2) + eps), as fla and transformers


def _steps(qk, v, eg, beta, qdotk, state, inplace: bool):
    """One sequence: ``qk [BHV, T, 2, K]`` (scaled query, key), ``v [BHV, T, V]``, ``eg``, ``beta``, ``qdotk``
    ``[BHV, T, 1]``, ``state [BHV, K, V]`` -> ``o [BHV, T, V]`` and the final state."""
    outputs = []
    for t in range(v.shape[1]):
        y = torch.bmm(qk[:, t], state)  # [BHV, 2, V]: S^T q, S^T k
        decay = eg[:, t]
        delta = (v[:, t] - decay * y[:, 1]).mul_(beta[:, t])
        outputs.append(torch.addcmul(decay * y[:, 0], qdotk[:, t], delta))
        update = (qk[:, t, 1, :, None], delta[:, None, :])  # k delta^T: [BHV, K, 1] x [BHV, 1, V]
        if inplace and t > 0:  # the first step writes a new state: the caller's is never written
            state.mul_(decay[..., None]).baddbmm_(*update)
        elif inplace:
            state = (state * decay[..., None]).baddbmm_(*update)
        else:
            state = torch.baddbmm(state * decay[..., None], *update)
    if len(outputs) < 2:
        return (outputs[0][:, None], state) if outputs else (v.new_zeros(v.shape), state.clone())
    return torch.stack(outputs, dim=1), state


def one_token(qk, v, decay, beta, scale: float, initial_state, l2norm: bool, dtype, inplace: bool = False):
    """One decoded token without autograd, in the fewest ops (each costs ~10-20 us inside a decode step, against
    ~2 us repeated alone). Value heads are viewed as ``[H, G]`` (query/key head h serves value heads h*G .. h*G + G-1):
    the query and key broadcast in the elementwise ops.

    ``qk [B, 2, H, K]`` (query, key), ``v [B, H, G, V]``, ``decay`` (``e^g``) and ``beta [B, H, G, 1]``,
    ``initial_state [B, HV, K, V]`` or ``None`` -> ``o [B, H, G, V]`` and the new state ``[B, H, G, K, V]``, in
    ``dtype``. ``initial_state`` is never written unless ``inplace`` (then a ``dtype`` state becomes the new one:
    no new state to allocate and copy into the cache; for the decode step of ``kernelize/gated_deltanet.py``,
    which owns the cache's state and views a conv output as ``qk`` and ``v`` without a copy)."""
    B, _, H, K = qk.shape
    G, V = v.shape[2], v.shape[3]
    qk = qk.to(dtype)
    if l2norm:  # x / sqrt(sum(x^2) + eps), the query's row also scaled
        r = torch.linalg.vecdot(qk, qk).add_(_EPS).rsqrt_()
        r[:, 0].mul_(scale)
        qk = qk * r[..., None]
    else:
        qk = qk.clone()
        qk[:, 0].mul_(scale)
    qk = qk.transpose(1, 2)  # [B, H, 2, K]
    qdotk = torch.linalg.vecdot(qk[:, :, 0], qk[:, :, 1])[:, :, None, None]  # [B, H, 1, 1]
    if initial_state is None:
        state, owned = qk.new_zeros(B, H, G, K, V), True
    else:  # a state converted or laid out anew is a copy: ours to update in place
        state = initial_state.to(dtype).reshape(B, H, G, K, V)
        owned = inplace or state.data_ptr() != initial_state.data_ptr()
    # [B, H, G, 2, V]: S^T q, S^T k. A bmm on the query/key repeated per value head (a few KiB): the state is read
    # once, from memory when decoding (~50 us for 512 KiB here; a broadcasting matmul takes ~85)
    y = torch.bmm(qk[:, :, None].expand(B, H, G, 2, K).reshape(B * H * G, 2, K),
                  state.reshape(B * H * G, K, V)).view(B, H, G, 2, V)
    delta = torch.addcmul(v.to(dtype), decay, y[:, :, :, 1], value=-1).mul_(beta)
    o = (y[:, :, :, 0] * decay).addcmul_(qdotk, delta)
    state = state.mul_(decay[..., None]) if owned else state * decay[..., None]
    return o, state.addcmul_(qk[:, :, None, 1, :, None], delta[:, :, :, None, :])


def recurrent_gated_delta_rule_torch(
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
    r"""The gated delta rule stepped token by token; arguments and results as the public op (validated there, see
    ``sp_kernels/kernels/chunk_gated_delta_rule/api.py``). ``initial_state`` is never written: the first step writes a new
    state, the next ones update it in place when autograd does not record."""
    dtype = compute_dtype(q.dtype)
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    out_dtype = v.dtype
    inplace = not (torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, g, beta, initial_state)))

    G = HV // H  # query/key head h serves value heads h*G .. h*G + G-1
    if T == 1 and inplace and cu_seqlens is None:
        qk = torch.stack([q[:, 0], k[:, 0]], dim=1)  # [B, 2, H, K]
        o, state = one_token(qk, v.reshape(B, H, G, V), g.reshape(B, H, G, 1).to(dtype).exp(),
                             beta.reshape(B, H, G, 1), scale, initial_state, use_qk_l2norm_in_kernel, dtype)
        return o.view(B, 1, HV, V).to(out_dtype), (state.view(B, HV, K, V) if output_final_state else None)
    qk = torch.stack([q, k], dim=3).to(dtype)  # [B, T, H, 2, K], a copy
    if use_qk_l2norm_in_kernel:
        qk = qk * torch.rsqrt(qk.square().sum(-1, keepdim=True) + _EPS)
    qk[..., 0, :] *= scale
    qdotk = torch.linalg.vecdot(qk[..., 0, :], qk[..., 1, :])  # [B, T, H]

    def per_value_head(x):  # [B, T, H, *] -> [B * HV, T, *] (one copy at most)
        x = x.transpose(1, 2).unsqueeze(2)
        return x.expand(B, H, G, *x.shape[3:]).reshape(B * HV, *x.shape[3:])

    qk, qdotk = per_value_head(qk), per_value_head(qdotk[..., None])
    v, eg, beta = (x.to(dtype).transpose(1, 2).reshape(B * HV, T, -1) for x in (v, g.exp()[..., None], beta[..., None]))

    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    if initial_state is None:
        state = v.new_zeros(N * HV, K, V)
    else:
        state = initial_state.to(dtype).reshape(N * HV, K, V)
    if cu_seqlens is None:
        o, state = _steps(qk, v, eg, beta, qdotk, state, inplace)
    else:  # B == 1: each sequence from its own state
        outputs, finals = [], []
        for n, (s, e) in enumerate(zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())):
            heads = slice(n * HV, (n + 1) * HV)
            o_n, final = _steps(qk[:, s:e], v[:, s:e], eg[:, s:e], beta[:, s:e], qdotk[:, s:e], state[heads],
                                inplace)
            outputs.append(o_n)
            finals.append(final)
        o, state = torch.cat(outputs, dim=1), torch.cat(finals, dim=0)
    o = o.view(B, HV, T, V).transpose(1, 2).to(out_dtype)
    return o, (state.view(N, HV, K, V) if output_final_state else None)


def supports_short(ctx) -> tuple[bool, str]:
    T = ctx.shapes.get("T")
    if T is None:
        return False, "for short inputs (decoding): the length is not known yet"
    if T > MAX_T:
        return False, f"for short inputs (decoding): T={T} > {MAX_T} (the chunked path is faster)"
    return True, ""
