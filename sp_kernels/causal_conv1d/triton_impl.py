"""Our portable Triton causal conv1d (one source for triton on CUDA and triton-ascend on NPU).

Portability: plain pointer arithmetic with masks, power-of-two ``tl.arange``, ``tl.static_range`` and ``tl.sum``
only (no block pointers: triton 3.9 removed them; no tensor descriptors, no ``tl.extra.cann``).

Layout: ``x`` ``[B, T, D]`` is seen as ``[B * T, D]`` rows; every sequence ``n`` (a batch row, or one packed
sequence) is ``(bos_n, L_n)``. The host lists the time tiles ``(n, start)`` of every sequence, so one flat work
list covers padded and packed batches alike. Tiles ``(BT, BD)`` come from :func:`tile_config` (a pure function of
the device profile and the shapes, no autotuning); on an NPU the grid is persistent (one program per vector core,
each looping over work items), elsewhere one program per item.

The backward works over the *extended* positions ``p in [-(W-1), L)`` of each sequence: ``p < 0`` are the
``initial_state`` columns, so ``d initial_state`` is just ``dx`` at negative positions. ``dweight`` / ``dbias``
are reduced per program group into a small ``[G, D, W]`` float32 buffer, summed on the host.

Unified Buffer (Ascend): the forward reads the initial state one ``[BD]`` column at a time, only in tiles that reach
negative positions (a transposed ``[BT, BD]`` gather per tap made bishengir need ~1600 bits per tile element; now
~200: 8192-element tiles fit). The backward keeps the gather form (the column form needed ~25% more there): its
UB use is dominated by the ``W * W`` recomputed pre-activation loads (~4000 bits per element: tiles of 256 elements).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from dispatch.context import Context
from dispatch.devices import DeviceProfile, detect, known_profiles
from dispatch.ub import Launch, estimate
from sp_kernels.compile_check.specs import CompileSpec
from sp_kernels._tiles import DTYPE_NAMES as _DTYPE_NAMES, UNKNOWN_T, cdiv as _cdiv, next_pow2 as _next_pow2

FWD = "ours.causal_conv1d_fwd"
BWD = "ours.causal_conv1d_bwd"


# ----------------------------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------------------------

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
def _causal_conv1d_fwd_kernel(
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
def _causal_conv1d_bwd_kernel(
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


# ----------------------------------------------------------------------------------------------------------------
# tile choice and launches (pure)
# ----------------------------------------------------------------------------------------------------------------





def _ub_dtype(dtype) -> torch.dtype:
    return dtype if dtype in _DTYPE_NAMES else torch.float32


def tile_config(profile: DeviceProfile, T: int, D: int, W: int, dtype, *, backward: bool = False) -> dict:
    """``{"BT", "BD", "W"}`` for ``[*, T, D]`` inputs on ``profile`` (pure; no autotuning).

    Candidates: ``BD`` a power of two in ``[16, 256]`` (at most ``next_pow2(D)``), ``BT`` in ``[1, 64]`` (at most
    ``next_pow2(T)``), at most 8192 elements a tile.

    * NPU: the tile must fit the Unified Buffer by the ``ours.causal_conv1d_fwd`` / ``_bwd`` model; tiles that fit
      double-buffered are preferred, then the larger tile, then the wider ``BD`` (contiguous rows). If the tile
      leaves vector cores idle (fewer work items than cores), ``BD`` then ``BT`` are halved while that helps.
    * CUDA: the largest tile (``BT <= 64``, ``BD <= 128``, <= 4096 elements: register tiles at 4 warps) whose
      model bytes fit the per-block shared memory.
    * CPU (the Triton interpreter, tests): small tiles ``BT=16, BD=32`` that exercise tails and masks.
    """
    T, D, W = max(int(T), 1), max(int(D), 1), int(W)
    kernel = BWD if backward else FWD
    if backward:
        T = T + W - 1  # extended positions
    max_bt = min(64, _next_pow2(T))
    max_bd = max(16, min(256, _next_pow2(D)))
    if profile.type == "cpu":
        return {"BT": min(16, max_bt), "BD": min(32, max_bd), "W": W}
    bts = [b for b in (64, 32, 16, 8, 4, 2, 1) if b <= max_bt]
    bds = [b for b in (256, 128, 64, 32, 16) if b <= max_bd]
    if profile.type == "npu" and profile.ub_bytes:
        dt = _ub_dtype(dtype)
        scored = []
        for bt in bts:
            for bd in bds:
                if bt * bd > 8192:
                    continue
                est = estimate(kernel, arch=profile, dtype=dt, BT=bt, BD=bd, W=W)
                if est.fits:
                    scored.append((est.fits_double_buffered, bt * bd, bd, bt))
        if not scored:
            return {"BT": 1, "BD": 16, "W": W}
        scored.sort(reverse=True)
        _, _, bd, bt = scored[0]
        cores = profile.vector_cores or 1
        while _cdiv(D, bd) * _cdiv(T, bt) < cores:
            if bd > 32:
                bd //= 2
            elif bt > 8:
                bt //= 2
            else:
                break
        return {"BT": bt, "BD": bd, "W": W}
    # cuda (and any other GPU)
    limit = profile.shared_memory_bytes or 48 * 1024
    best = None
    for bt in bts:
        for bd in bds:
            if bd > 128 or bt * bd > 4096:
                continue
            single, _ = _model_bytes(kernel, dtype, bt, bd, W)
            if single <= limit:
                key = (bt * bd, bd, bt)
                best = key if best is None or key > best else best
    _, bd, bt = best or (0, 16, 1)
    return {"BT": bt, "BD": bd, "W": W}


def _model_bytes(kernel: str, dtype, BT: int, BD: int, W: int) -> tuple[int, int]:
    from dispatch.ub import COUNTED

    return COUNTED[kernel].bytes(_ub_dtype(dtype).itemsize, BT=BT, BD=BD, W=W)


def _grid(profile: DeviceProfile, items: int) -> int:
    items = max(1, int(items))
    if profile.type == "npu":
        return min(items, profile.vector_cores or 1, profile.max_grid or items)
    if profile.type == "cpu":
        return min(items, 3)  # the interpreter: a few programs, so the persistent loop is exercised
    return min(items, profile.max_grid or items)


def _groups(profile: DeviceProfile, n_d: int, n_tiles: int) -> int:
    """Time-tile groups of the backward (its partial dweight rows)."""
    if profile.type == "npu":
        want = _cdiv(profile.vector_cores or 1, n_d)
    elif profile.type == "cpu":
        want = 2
    else:
        want = _cdiv(1024, n_d)
    return max(1, min(n_tiles, want, 256))


def _tile_count(lengths, BT: int, ext: int = 0) -> int:
    return sum(max(1, _cdiv(l + ext, BT)) for l in lengths)


def plan(profile: DeviceProfile, B: int, T: int, D: int, W: int, dtype, backward: bool = False,
         lengths=None) -> Launch:
    """The launch (kernel, tile, grid) for a ``[B, T, D]`` batch (``lengths``: packed sequence lengths)."""
    lengths = [T] * B if lengths is None else list(lengths)
    cfg = tile_config(profile, T, D, W, dtype, backward=backward)
    n_d = _cdiv(D, cfg["BD"])
    n_tiles = _tile_count(lengths, cfg["BT"], W - 1 if backward else 0)
    if backward:
        items = n_d * _groups(profile, n_d, n_tiles)
    else:
        items = n_d * n_tiles
    return Launch(BWD if backward else FWD, cfg, _grid(profile, items))


def launches(ctx: Context) -> tuple[Launch, ...]:
    """What :func:`causal_conv1d_triton` launches for ``ctx`` (forward; backward too when grad is needed)."""
    s = ctx.shapes
    B, T, D, W = s.get("B", 1), s.get("T", UNKNOWN_T), s["D"], s["W"]
    out = [plan(ctx.device, B, T, D, W, ctx.dtype)]
    if ctx.requires_grad:
        out.append(plan(ctx.device, B, T, D, W, ctx.dtype, backward=True))
    return tuple(out)


def supports(ctx: Context) -> tuple[bool, str]:
    if ctx.dtype not in _DTYPE_NAMES:
        return False, f"Triton kernels take bf16/fp16/fp32, not {str(ctx.dtype).replace('torch.', '')}"
    return True, ""


# ----------------------------------------------------------------------------------------------------------------
# launcher
# ----------------------------------------------------------------------------------------------------------------

def _sequences(B, T, cu_seqlens, device):
    if cu_seqlens is None:
        bos = [b * T for b in range(B)]
        lens = [T] * B
    else:
        cu = cu_seqlens.tolist()
        bos, lens = cu[:-1], [e - s for s, e in zip(cu[:-1], cu[1:])]
    return bos, lens


def _tiles(lens, BT, first, device):
    seq, start = [], []
    for n, L in enumerate(lens):
        extent = L - first
        for i in range(max(1, _cdiv(extent, BT))):
            seq.append(n)
            start.append(first + i * BT)
    return (torch.tensor(seq, dtype=torch.int32, device=device),
            torch.tensor(start, dtype=torch.int32, device=device))


def _profile(x: torch.Tensor) -> DeviceProfile:
    return detect(x.device)


def _forward(x, weight, bias, h0, act, output_final_state, cu_seqlens, tile=None):
    B, T, D = x.shape
    W = weight.shape[1]
    profile = _profile(x)
    cfg = dict(tile) if tile else tile_config(profile, T, D, W, x.dtype)
    bos, lens = _sequences(B, T, cu_seqlens, x.device)
    N = len(lens)
    tile_seq, tile_start = _tiles(lens, cfg["BT"], 0, x.device)
    seq_bos = torch.tensor(bos, dtype=torch.int32, device=x.device)
    seq_len = torch.tensor(lens, dtype=torch.int32, device=x.device)
    y = torch.empty_like(x)
    final = x.new_empty(N, D, W - 1) if output_final_state else None
    store_final = output_final_state and W > 1
    n_items = tile_seq.numel() * _cdiv(D, cfg["BD"])
    grid = (cfg.get("grid") or _grid(profile, n_items),)
    _causal_conv1d_fwd_kernel[grid](
        x, weight, bias if bias is not None else x, h0 if h0 is not None else x, y,
        final if store_final else x, tile_seq, tile_start, seq_bos, seq_len, D, tile_seq.numel(),
        W=W, BT=cfg["BT"], BD=cfg["BD"], HAS_BIAS=bias is not None, HAS_H0=h0 is not None and W > 1,
        ACT=act == "silu", STORE_FINAL=store_final, BW=_next_pow2(max(W - 1, 1)),
    )
    return y, final, (seq_bos, seq_len)


def _backward(x, weight, bias, h0, act, cu_seqlens, dy, dfinal, tile=None):
    B, T, D = x.shape
    W = weight.shape[1]
    profile = _profile(x)
    cfg = dict(tile) if tile else tile_config(profile, T, D, W, x.dtype, backward=True)
    bos, lens = _sequences(B, T, cu_seqlens, x.device)
    tile_seq, tile_start = _tiles(lens, cfg["BT"], -(W - 1), x.device)
    seq_bos = torch.tensor(bos, dtype=torch.int32, device=x.device)
    seq_len = torch.tensor(lens, dtype=torch.int32, device=x.device)
    n_tiles = tile_seq.numel()
    n_d = _cdiv(D, cfg["BD"])
    G = cfg.get("groups") or _groups(profile, n_d, n_tiles)
    dx = torch.empty_like(x)
    has_h0 = h0 is not None and W > 1
    dh0 = torch.zeros_like(h0) if h0 is not None else None
    dw_part = torch.empty(G, D, W, dtype=torch.float32, device=x.device)
    db_part = torch.empty(G, D, dtype=torch.float32, device=x.device) if bias is not None else None
    grid = (cfg.get("grid") or _grid(profile, n_d * G),)
    has_dfinal = dfinal is not None and W > 1
    _causal_conv1d_bwd_kernel[grid](
        x, weight, bias if bias is not None else x, h0 if has_h0 else x, dy.contiguous(),
        dfinal.contiguous() if has_dfinal else x, dx, dh0 if has_h0 else x, dw_part,
        db_part if db_part is not None else dw_part, tile_seq, tile_start, seq_bos, seq_len, D, n_tiles, G,
        W=W, BT=cfg["BT"], BD=cfg["BD"], HAS_BIAS=bias is not None, HAS_H0=has_h0, ACT=act == "silu",
        HAS_DFINAL=has_dfinal, BW=_next_pow2(W),
    )
    dw = dw_part.sum(0).to(weight.dtype)
    db = db_part.sum(0).to(bias.dtype) if bias is not None else None
    return dx, dw, db, dh0


class CausalConv1dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, initial_state, activation, output_final_state, cu_seqlens, tile):
        y, final, _ = _forward(x, weight, bias, initial_state, activation, output_final_state, cu_seqlens,
                               tile and tile.get("fwd"))
        ctx.save_for_backward(x, weight, bias, initial_state, cu_seqlens)
        ctx.activation = activation
        ctx.tile = tile and tile.get("bwd")
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        x, weight, bias, h0, cu_seqlens = ctx.saved_tensors
        dx, dw, db, dh0 = _backward(x, weight, bias, h0, ctx.activation, cu_seqlens, dy, dfinal, ctx.tile)
        return dx, dw, db, dh0, None, None, None, None


def causal_conv1d_triton(x, weight, bias=None, activation=None, initial_state=None, output_final_state=False,
                         cu_seqlens=None, *, tile: dict | None = None):
    """Validated arguments as :func:`kernels.causal_conv1d`.

    ``tile`` (tests, experiments) overrides the choice: ``{"fwd": {"BT", "BD"[, "grid"]}, "bwd": {"BT", "BD"[,
    "grid", "groups"]}}``.
    """
    if activation == "swish":
        activation = "silu"
    x = x.contiguous()
    weight = weight.contiguous()
    bias = bias.contiguous() if bias is not None else None
    initial_state = initial_state.contiguous() if initial_state is not None else None
    y, final = CausalConv1dFunction.apply(x, weight, bias, initial_state, activation, output_final_state,
                                          cu_seqlens, tile)
    return y, final


# ----------------------------------------------------------------------------------------------------------------
# compile specs
# ----------------------------------------------------------------------------------------------------------------

#: Qwen3.5 / Qwen3-Next conv channel counts (q+k+v of the linear-attention layers) and their sp shards.
QWEN_D = sorted({d // sp for d in (2048, 4096, 8192, 10240) for sp in (1, 2, 4, 8)})
QWEN_T = (1, 63, 4096, 65536)
QWEN_W = 4


def _profiles():
    return [p for p in known_profiles().values() if p.type in ("cuda", "npu")]


def compile_specs() -> list[CompileSpec]:
    """Every (kernel, tile, dtype) :func:`tile_config` picks for Qwen3.5 shapes on the known CUDA / NPU profiles.

    Each spec compiles the most demanding variant (bias, SiLU, initial state, final state / its gradient).
    """
    specs: dict[str, CompileSpec] = {}
    module = __name__
    for dtype, name in _DTYPE_NAMES.items():
        ptr = f"*{name}"
        for profile in _profiles():
            for D in QWEN_D:
                for T in QWEN_T:
                    for backward in (False, True):
                        cfg = tile_config(profile, T, D, QWEN_W, dtype, backward=backward)
                        tile = {"BT": cfg["BT"], "BD": cfg["BD"], "W": QWEN_W}
                        if backward:
                            sig = {"x": ptr, "weight": ptr, "bias": ptr, "h0": ptr, "dy": ptr, "dfinal": ptr,
                                   "dx": ptr, "dh0": ptr, "dw_part": "*fp32", "db_part": "*fp32",
                                   "tile_seq": "*i32", "tile_start": "*i32", "seq_bos": "*i32", "seq_len": "*i32",
                                   "D": "i32", "n_tiles": "i32", "n_groups": "i32"}
                            const = {"W": QWEN_W, "BT": cfg["BT"], "BD": cfg["BD"], "HAS_BIAS": True,
                                     "HAS_H0": True, "ACT": True, "HAS_DFINAL": True, "BW": _next_pow2(QWEN_W)}
                            spec = CompileSpec(BWD, module, "_causal_conv1d_bwd_kernel", sig, const, name, tile,
                                               note=f"{profile.spec} T={T} D={D}")
                        else:
                            sig = {"x": ptr, "weight": ptr, "bias": ptr, "h0": ptr, "y": ptr, "final": ptr,
                                   "tile_seq": "*i32", "tile_start": "*i32", "seq_bos": "*i32", "seq_len": "*i32",
                                   "D": "i32", "n_tiles": "i32"}
                            const = {"W": QWEN_W, "BT": cfg["BT"], "BD": cfg["BD"], "HAS_BIAS": True,
                                     "HAS_H0": True, "ACT": True, "STORE_FINAL": True,
                                     "BW": _next_pow2(QWEN_W - 1)}
                            spec = CompileSpec(FWD, module, "_causal_conv1d_fwd_kernel", sig, const, name, tile,
                                               note=f"{profile.spec} T={T} D={D}")
                        specs.setdefault((profile.type, spec.key), spec)
    return list(specs.values())
