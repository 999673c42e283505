"""Our portable Triton causal conv1d kernels (one source for triton on CUDA and triton-ascend on NPU): the
``@triton.jit`` functions only. Their tiles come from :mod:`.triton_plan`, :mod:`.triton_launch` runs them.

Portability: plain pointer arithmetic with masks, power-of-two ``tl.arange``, ``tl.static_range`` and ``tl.sum``
only (no block pointers: triton 3.9 removed them; no tensor descriptors, no ``tl.extra.cann``).

Layout: ``x`` ``[B, T, D]`` is seen as ``[B * T, D]`` rows; every sequence ``n`` (a batch row, or one packed
sequence) is ``(bos_n, L_n)``. The host lists the time tiles ``(n, start)`` of every sequence, so one flat work
list covers padded and packed batches alike; each program loops over work items (a persistent grid on an NPU).

The backward works over the *extended* positions ``p in [-(W-1), L)`` of each sequence: ``p < 0`` are the
``initial_state`` columns, so ``d initial_state`` is just ``dx`` at negative positions. ``dweight`` / ``dbias``
are reduced per program group into a small ``[G, D, W]`` float32 buffer, summed on the host.

Unified Buffer (Ascend): the forward reads the initial state one ``[BD]`` column at a time, only in tiles that reach
negative positions (a transposed ``[BT, BD]`` gather per tap made bishengir need ~1600 bits per tile element; now
~200: 8192-element tiles fit). The backward keeps the gather form (the column form needed ~25% more there): its
UB use is dominated by the ``W * W`` recomputed pre-activation loads (~4000 bits per element: tiles of 256 elements).
"""
import triton
import triton.language as tl


@triton.jit
def _load_input(x, h0, n, bos, L, p0, offs_t, offs_d, mask_d, D, W: tl.constexpr, HAS_H0: tl.constexpr):
    """Input at positions ``p = p0 + offs_t`` (``[BT]``, may be negative: initial-state columns) of sequence n,
    ``[BT, BD]`` fp32.

    The initial state ``h0[n, d, j]`` (position ``j - (W-1)``) is read one column ``j`` at a time as a ``[BD]``
    vector and placed in its row, and only when the tile reaches negative positions: a transposed ``[BT, BD]``
    gather would cost the Unified Buffer far more than the tile itself (bishengir)."""
    p = p0 + offs_t
    in_seq = (p >= 0) & (p < L)
    rows = (bos + p).to(tl.int64)
    val = tl.load(x + rows[:, None] * D + offs_d[None, :], mask=in_seq[:, None] & mask_d[None, :], other=0.0)
    val = val.to(tl.float32)
    if HAS_H0:
        if p0 < 0:
            base = n.to(tl.int64) * D * (W - 1)
            for j in tl.static_range(W - 1):
                hv = tl.load(h0 + base + offs_d * (W - 1) + j, mask=mask_d, other=0.0).to(tl.float32)
                val = tl.where((p == j - (W - 1))[:, None], hv[None, :], val)
    return val


@triton.jit
def _preact(x, h0, weight, bias, n, bos, L, p0, offs_t, offs_d, mask_d, D, W: tl.constexpr,
            HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    """``bias + sum_w weight[:, w] * input(p - (W-1-w))`` at positions ``p = p0 + offs_t``, ``[BT, BD]`` fp32."""
    acc = tl.zeros([BT, BD], dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias + offs_d, mask=mask_d, other=0.0).to(tl.float32)[None, :]
    for w in tl.static_range(W):
        wcol = tl.load(weight + offs_d * W + w, mask=mask_d, other=0.0).to(tl.float32)
        xin = _load_input(x, h0, n, bos, L, p0 - (W - 1 - w), offs_t, offs_d, mask_d, D, W, HAS_H0)
        acc += wcol[None, :] * xin
    return acc


@triton.jit
def causal_conv1d_fwd_kernel(
    x, weight, bias, h0, y, final, tile_seq, tile_start, seq_bos, seq_len,
    D, n_tiles,
    W: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
    ACT: tl.constexpr, STORE_FINAL: tl.constexpr, BW: tl.constexpr,
):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    n_d = tl.cdiv(D, BD)
    offs_t = tl.arange(0, BT)
    for item in range(pid, n_tiles * n_d, nprog):
        i_t = item // n_d
        i_d = item % n_d
        n = tl.load(tile_seq + i_t)
        start = tl.load(tile_start + i_t)
        bos = tl.load(seq_bos + n)
        L = tl.load(seq_len + n)
        offs_d = i_d * BD + tl.arange(0, BD)
        mask_d = offs_d < D
        p = start + offs_t
        acc = _preact(x, h0, weight, bias, n, bos, L, start, offs_t, offs_d, mask_d, D, W, HAS_BIAS, HAS_H0, BT, BD)
        if ACT:
            acc = acc * tl.sigmoid(acc)
        rows = (bos + p).to(tl.int64)
        tl.store(y + rows[:, None] * D + offs_d[None, :], acc.to(y.dtype.element_ty),
                 mask=(p < L)[:, None] & mask_d[None, :])
        if STORE_FINAL:
            if start + BT >= L:  # the last tile of its sequence writes the state: inputs L-(W-1) .. L-1
                base = n.to(tl.int64) * D * (W - 1)
                for j in tl.static_range(W - 1):
                    q = L - (W - 1) + j  # a [BD] column: from x, or from h0 when the sequence is shorter
                    qv = q + 0 * offs_d  # [BD] (a scalar condition in a vector mask)
                    xv = tl.load(x + (bos + q).to(tl.int64) * D + offs_d, mask=mask_d & (qv >= 0), other=0.0)
                    if HAS_H0:
                        hv = tl.load(h0 + base + offs_d * (W - 1) + (q + W - 1), mask=mask_d & (qv < 0), other=0.0)
                        xv = tl.where(qv < 0, hv, xv)
                    tl.store(final + base + offs_d * (W - 1) + j, xv.to(final.dtype.element_ty), mask=mask_d)


@triton.jit
def _load_input_rows(x, h0, n, bos, L, p, offs_d, mask_d, D, W: tl.constexpr, HAS_H0: tl.constexpr):
    """Input at positions ``p`` (``[BT]``, may be negative: initial-state columns) of sequence n, ``[BT, BD]`` fp32.

    The backward's form: the initial state is gathered transposed into the tile (bishengir gives the backward less
    Unified Buffer this way than with :func:`_load_input`'s column-wise form)."""
    in_seq = (p >= 0) & (p < L)
    rows = (bos + p).to(tl.int64)
    val = tl.load(x + rows[:, None] * D + offs_d[None, :], mask=in_seq[:, None] & mask_d[None, :], other=0.0)
    val = val.to(tl.float32)
    if HAS_H0:
        in_h0 = (p < 0) & (p >= 1 - W)
        col = p + (W - 1)
        base = n.to(tl.int64) * D * (W - 1)
        hv = tl.load(h0 + base + offs_d[None, :] * (W - 1) + col[:, None],
                     mask=in_h0[:, None] & mask_d[None, :], other=0.0)
        val += hv.to(tl.float32)
    return val


@triton.jit
def _preact_rows(x, h0, weight, bias, n, bos, L, p, offs_d, mask_d, D, W: tl.constexpr, HAS_BIAS: tl.constexpr,
            HAS_H0: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    """``bias + sum_w weight[:, w] * input(p - (W-1-w))`` at positions ``p``, ``[BT, BD]`` fp32."""
    acc = tl.zeros([BT, BD], dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias + offs_d, mask=mask_d, other=0.0).to(tl.float32)[None, :]
    for w in tl.static_range(W):
        wcol = tl.load(weight + offs_d * W + w, mask=mask_d, other=0.0).to(tl.float32)
        xin = _load_input_rows(x, h0, n, bos, L, p - (W - 1 - w), offs_d, mask_d, D, W, HAS_H0)
        acc += wcol[None, :] * xin
    return acc


@triton.jit
def causal_conv1d_bwd_kernel(
    x, weight, bias, h0, dy, dfinal, dx, dh0, dw_part, db_part, tile_seq, tile_start, seq_bos, seq_len,
    D, n_tiles, n_groups,
    W: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
    ACT: tl.constexpr, HAS_DFINAL: tl.constexpr, BW: tl.constexpr,
):
    """Work item ``(i_d, g)``: channel tile ``i_d`` over the time tiles ``g, g + G, ...``; dweight / dbias of the
    item go to row ``g`` of the partial buffers. Time tiles cover the extended positions ``[-(W-1), L)``."""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    n_d = tl.cdiv(D, BD)
    cols = tl.arange(0, BW)
    for item in range(pid, n_d * n_groups, nprog):
        i_d = item // n_groups
        g = item % n_groups
        offs_d = i_d * BD + tl.arange(0, BD)
        mask_d = offs_d < D
        dw_acc = tl.zeros([BD, BW], dtype=tl.float32)
        db_acc = tl.zeros([BD], dtype=tl.float32)
        for i_t in range(g, n_tiles, n_groups):
            n = tl.load(tile_seq + i_t)
            start = tl.load(tile_start + i_t)
            bos = tl.load(seq_bos + n)
            L = tl.load(seq_len + n)
            p = start + tl.arange(0, BT)  # extended positions, start >= -(W-1)
            dx_acc = tl.zeros([BT, BD], dtype=tl.float32)
            dz0 = tl.zeros([BT, BD], dtype=tl.float32)
            for w in tl.static_range(W):
                u = p + (W - 1 - w)  # the outputs that read input p through tap w
                valid = (u >= 0) & (u < L)
                rows = (bos + u).to(tl.int64)
                dz = tl.load(dy + rows[:, None] * D + offs_d[None, :], mask=valid[:, None] & mask_d[None, :],
                             other=0.0).to(tl.float32)
                if ACT:
                    z = _preact_rows(x, h0, weight, bias, n, bos, L, u, offs_d, mask_d, D, W, HAS_BIAS, HAS_H0, BT, BD)
                    sig = tl.sigmoid(z)
                    dz = dz * sig * (1.0 + z * (1.0 - sig))
                wcol = tl.load(weight + offs_d * W + w, mask=mask_d, other=0.0).to(tl.float32)
                dx_acc += wcol[None, :] * dz
                if w == W - 1:
                    dz0 = dz  # dL/dz at p itself (zero outside [0, L))
            if HAS_DFINAL:  # final[j] = input(L - (W-1) + j)
                j = p - L + (W - 1)
                mj = (j >= 0) & (j < W - 1) & (p < L) & (p >= 1 - W)
                base = n.to(tl.int64) * D * (W - 1)
                dx_acc += tl.load(dfinal + base + offs_d[None, :] * (W - 1) + j[:, None],
                                  mask=mj[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
            rows = (bos + p).to(tl.int64)
            tl.store(dx + rows[:, None] * D + offs_d[None, :], dx_acc.to(dx.dtype.element_ty),
                     mask=((p >= 0) & (p < L))[:, None] & mask_d[None, :])
            if HAS_H0:
                col = p + (W - 1)
                base = n.to(tl.int64) * D * (W - 1)
                tl.store(dh0 + base + offs_d[None, :] * (W - 1) + col[:, None], dx_acc.to(dh0.dtype.element_ty),
                         mask=((p < 0) & (p >= 1 - W))[:, None] & mask_d[None, :])
            for w in tl.static_range(W):
                xin = _load_input_rows(x, h0, n, bos, L, p - (W - 1 - w), offs_d, mask_d, D, W, HAS_H0)
                part = tl.sum(dz0 * xin, axis=0)  # [BD]
                dw_acc += tl.where(cols[None, :] == w, part[:, None], 0.0)
            if HAS_BIAS:
                db_acc += tl.sum(dz0, axis=0)
        base = g.to(tl.int64) * D
        tl.store(dw_part + (base + offs_d[:, None]) * W + cols[None, :], dw_acc,
                 mask=mask_d[:, None] & (cols[None, :] < W))
        if HAS_BIAS:
            tl.store(db_part + base + offs_d, db_acc, mask=mask_d)
