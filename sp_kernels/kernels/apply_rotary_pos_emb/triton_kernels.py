"""Our portable Triton rotary embedding kernels (``rotate_half`` convention, partial rotary, grouped KV heads): the
``@triton.jit`` functions only. Their tiles come from :mod:`.triton_plan`, :mod:`.triton_launch` runs them.

One source for triton (CUDA) and triton-ascend (NPU): plain pointer arithmetic with masks, power-of-two
``tl.arange``, ``tl.static_range`` / ``tl.sum`` only (no block pointers, no tensor descriptors).

A work item is ``(b, time tile)``: its program loads ``cos`` / ``sin`` for ``BT`` positions once and rotates every
query head then every key head at those positions (``k`` may have fewer heads than ``q``). The head layout
(``[B, H, T, D]`` or ``[B, T, H, D]``) is handled by strides. Only the first ``R = cos.shape[-1]`` dims rotate
(two half tiles of ``BH = next_pow2(R/2)`` columns); the tail ``D - R`` is copied through (``BP`` columns). The
backward also accumulates ``dcos`` / ``dsin`` over the heads in the same program (per batch row, summed on the
host when ``cos`` is broadcast over the batch).
"""
import triton
import triton.language as tl


@triton.jit
def _rotate_head(x, out, row, offs_h, m2, offs_p, mp, c1, c2, s1, s2, HALF: tl.constexpr, R: tl.constexpr,
                 HAS_TAIL: tl.constexpr):
    """Rotate one head at ``BT`` positions: ``row`` ``[BT]`` int64 offsets of each position's first dim."""
    ptr = x + row[:, None]
    x1 = tl.load(ptr + offs_h[None, :], mask=m2, other=0.0).to(tl.float32)
    x2 = tl.load(ptr + HALF + offs_h[None, :], mask=m2, other=0.0).to(tl.float32)
    o1 = x1 * c1 - x2 * s1
    o2 = x2 * c2 + x1 * s2
    optr = out + row[:, None]
    tl.store(optr + offs_h[None, :], o1.to(out.dtype.element_ty), mask=m2)
    tl.store(optr + HALF + offs_h[None, :], o2.to(out.dtype.element_ty), mask=m2)
    if HAS_TAIL:
        tail = tl.load(ptr + R + offs_p[None, :], mask=mp, other=0.0)
        tl.store(optr + R + offs_p[None, :], tail.to(out.dtype.element_ty), mask=mp)


@triton.jit
def rotary_fwd_kernel(
    q, k, cos, sin, oq, ok,
    B, T, H, HK, D, q_sb, q_sh, q_st, k_sb, k_sh, k_st, cos_sb,
    R: tl.constexpr, BT: tl.constexpr, BH: tl.constexpr, BP: tl.constexpr, HAS_TAIL: tl.constexpr,
):
    HALF: tl.constexpr = R // 2
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    n_t = tl.cdiv(T, BT)
    offs_h = tl.arange(0, BH)
    offs_p = tl.arange(0, BP)
    for item in range(pid, B * n_t, nprog):
        b = item // n_t
        t = (item % n_t) * BT + tl.arange(0, BT)
        mt = t < T
        m2 = mt[:, None] & (offs_h < HALF)[None, :]
        mp = mt[:, None] & (offs_p < D - R)[None, :]
        cb = b.to(tl.int64) * cos_sb + t.to(tl.int64) * R
        c1 = tl.load(cos + cb[:, None] + offs_h[None, :], mask=m2, other=0.0).to(tl.float32)
        c2 = tl.load(cos + cb[:, None] + HALF + offs_h[None, :], mask=m2, other=0.0).to(tl.float32)
        s1 = tl.load(sin + cb[:, None] + offs_h[None, :], mask=m2, other=0.0).to(tl.float32)
        s2 = tl.load(sin + cb[:, None] + HALF + offs_h[None, :], mask=m2, other=0.0).to(tl.float32)
        row = b.to(tl.int64) * q_sb + t.to(tl.int64) * q_st
        for _ in range(H):
            _rotate_head(q, oq, row, offs_h, m2, offs_p, mp, c1, c2, s1, s2, HALF, R, HAS_TAIL)
            row += q_sh  # next head (int64 offsets)
        row = b.to(tl.int64) * k_sb + t.to(tl.int64) * k_st
        for _ in range(HK):
            _rotate_head(k, ok, row, offs_h, m2, offs_p, mp, c1, c2, s1, s2, HALF, R, HAS_TAIL)
            row += k_sh


@triton.jit
def _unrotate_head(x, dout, dx, row, offs_h, m2, offs_p, mp, c1, c2, s1, s2, HALF: tl.constexpr, R: tl.constexpr,
                   HAS_TAIL: tl.constexpr):
    """dx of one head; returns its ``(dc1, dc2, ds1, ds2)`` contributions."""
    gptr = dout + row[:, None]
    g1 = tl.load(gptr + offs_h[None, :], mask=m2, other=0.0).to(tl.float32)
    g2 = tl.load(gptr + HALF + offs_h[None, :], mask=m2, other=0.0).to(tl.float32)
    xptr = x + row[:, None]
    x1 = tl.load(xptr + offs_h[None, :], mask=m2, other=0.0).to(tl.float32)
    x2 = tl.load(xptr + HALF + offs_h[None, :], mask=m2, other=0.0).to(tl.float32)
    # o1 = x1 c1 - x2 s1 ; o2 = x2 c2 + x1 s2
    d1 = g1 * c1 + g2 * s2
    d2 = g2 * c2 - g1 * s1
    dptr = dx + row[:, None]
    tl.store(dptr + offs_h[None, :], d1.to(dx.dtype.element_ty), mask=m2)
    tl.store(dptr + HALF + offs_h[None, :], d2.to(dx.dtype.element_ty), mask=m2)
    if HAS_TAIL:
        tail = tl.load(gptr + R + offs_p[None, :], mask=mp, other=0.0)
        tl.store(dptr + R + offs_p[None, :], tail.to(dx.dtype.element_ty), mask=mp)
    return g1 * x1, g2 * x2, -g1 * x2, g2 * x1


@triton.jit
def rotary_bwd_kernel(
    q, k, cos, sin, doq, dok, dq, dk, dcos, dsin,
    B, T, H, HK, D, q_sb, q_sh, q_st, k_sb, k_sh, k_st, cos_sb,
    R: tl.constexpr, BT: tl.constexpr, BH: tl.constexpr, BP: tl.constexpr, HAS_TAIL: tl.constexpr,
):
    """``dcos`` / ``dsin`` are float32 ``[B, T, R]`` (one row per batch row, whatever ``cos``'s batch)."""
    HALF: tl.constexpr = R // 2
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    n_t = tl.cdiv(T, BT)
    offs_h = tl.arange(0, BH)
    offs_p = tl.arange(0, BP)
    for item in range(pid, B * n_t, nprog):
        b = item // n_t
        t = (item % n_t) * BT + tl.arange(0, BT)
        mt = t < T
        m2 = mt[:, None] & (offs_h < HALF)[None, :]
        mp = mt[:, None] & (offs_p < D - R)[None, :]
        cb = b.to(tl.int64) * cos_sb + t.to(tl.int64) * R
        c1 = tl.load(cos + cb[:, None] + offs_h[None, :], mask=m2, other=0.0).to(tl.float32)
        c2 = tl.load(cos + cb[:, None] + HALF + offs_h[None, :], mask=m2, other=0.0).to(tl.float32)
        s1 = tl.load(sin + cb[:, None] + offs_h[None, :], mask=m2, other=0.0).to(tl.float32)
        s2 = tl.load(sin + cb[:, None] + HALF + offs_h[None, :], mask=m2, other=0.0).to(tl.float32)
        dc1 = tl.zeros([BT, BH], dtype=tl.float32)
        dc2 = tl.zeros([BT, BH], dtype=tl.float32)
        ds1 = tl.zeros([BT, BH], dtype=tl.float32)
        ds2 = tl.zeros([BT, BH], dtype=tl.float32)
        row = b.to(tl.int64) * q_sb + t.to(tl.int64) * q_st
        for _ in range(H):
            a1, a2, a3, a4 = _unrotate_head(q, doq, dq, row, offs_h, m2, offs_p, mp, c1, c2, s1, s2, HALF, R,
                                            HAS_TAIL)
            dc1 += a1
            dc2 += a2
            ds1 += a3
            ds2 += a4
            row += q_sh
        row = b.to(tl.int64) * k_sb + t.to(tl.int64) * k_st
        for _ in range(HK):
            a1, a2, a3, a4 = _unrotate_head(k, dok, dk, row, offs_h, m2, offs_p, mp, c1, c2, s1, s2, HALF, R,
                                            HAS_TAIL)
            dc1 += a1
            dc2 += a2
            ds1 += a3
            ds2 += a4
            row += k_sh
        ob = (b.to(tl.int64) * T + t.to(tl.int64)) * R
        tl.store(dcos + ob[:, None] + offs_h[None, :], dc1, mask=m2)
        tl.store(dcos + ob[:, None] + HALF + offs_h[None, :], dc2, mask=m2)
        tl.store(dsin + ob[:, None] + offs_h[None, :], ds1, mask=m2)
        tl.store(dsin + ob[:, None] + HALF + offs_h[None, :], ds2, mask=m2)
