"""Our portable Triton fused recurrent gated delta rule kernel, FORWARD only (decode and short sequences): the
``@triton.jit`` function only. Its tile comes from :mod:`.triton_plan`, :mod:`.triton_launch` runs it.

One work item per ``(sequence, value head, value tile)``: its program holds the ``[BK, BV]`` float32 state slice
(all of ``K``, ``BV`` columns of ``V``) in registers / the Unified Buffer and walks the sequence token by token::

    S = exp(g_t) S ;  S += k_t (beta_t (v_t - S^T k_t))^T ;  o_t = S^T (scale q_t)

with ``q`` / ``k`` optionally L2-normalised in the kernel (eps 1e-6, as fla), grouped value heads (value head
``hv`` reads query/key head ``hv // (HV / H)``), initial / final states and packed sequences. The grid is
persistent on an NPU (one program per vector core). Plain pointer arithmetic with masks only (no block pointers,
no tensor descriptors): one source for triton and triton-ascend.
"""
import triton
import triton.language as tl


@triton.jit
def fused_recurrent_gdr_fwd_kernel(
    q, k, v, g, beta, o, h0, ht, seq_bos, seq_len,
    scale, N, H, HV, K, V,
    BK: tl.constexpr, BV: tl.constexpr, HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr, L2NORM: tl.constexpr,
):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    n_v = tl.cdiv(V, BV)
    G = HV // H
    offs_k = tl.arange(0, BK)
    mk = offs_k < K
    for item in range(pid, N * HV * n_v, nprog):
        i_v = item % n_v
        nh = item // n_v
        hv = nh % HV
        n = nh // HV
        hq = hv // G
        bos = tl.load(seq_bos + n)
        L = tl.load(seq_len + n)
        offs_v = i_v * BV + tl.arange(0, BV)
        mv = offs_v < V
        mkv = mk[:, None] & mv[None, :]
        hbase = (n * HV + hv).to(tl.int64) * K * V
        hoff = offs_k[:, None] * V + offs_v[None, :]
        if HAS_H0:
            h = tl.load(h0 + hbase + hoff, mask=mkv, other=0.0).to(tl.float32)
        else:
            h = tl.zeros([BK, BV], dtype=tl.float32)
        for i in range(0, L):
            tok = (bos + i).to(tl.int64)
            q_t = tl.load(q + (tok * H + hq) * K + offs_k, mask=mk, other=0.0).to(tl.float32)
            k_t = tl.load(k + (tok * H + hq) * K + offs_k, mask=mk, other=0.0).to(tl.float32)
            v_t = tl.load(v + (tok * HV + hv) * V + offs_v, mask=mv, other=0.0).to(tl.float32)
            g_t = tl.load(g + tok * HV + hv).to(tl.float32)
            b_t = tl.load(beta + tok * HV + hv).to(tl.float32)
            if L2NORM:
                q_t = q_t / tl.sqrt(tl.sum(q_t * q_t, axis=0) + 1e-6)
                k_t = k_t / tl.sqrt(tl.sum(k_t * k_t, axis=0) + 1e-6)
            q_t = q_t * scale
            h = h * tl.exp(g_t)
            pred = tl.sum(h * k_t[:, None], axis=0)  # S^T k  [BV]
            delta = b_t * (v_t - pred)
            h = h + k_t[:, None] * delta[None, :]
            o_t = tl.sum(h * q_t[:, None], axis=0)
            tl.store(o + (tok * HV + hv) * V + offs_v, o_t.to(o.dtype.element_ty), mask=mv)
        if STORE_FINAL:
            tl.store(ht + hbase + hoff, h.to(ht.dtype.element_ty), mask=mkv)
