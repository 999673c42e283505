"""Our portable Triton rotary embedding (``rotate_half`` convention, partial rotary, grouped KV heads).

One source for triton (CUDA) and triton-ascend (NPU): plain pointer arithmetic with masks, power-of-two
``tl.arange``, ``tl.static_range`` / ``tl.sum`` only (no block pointers, no tensor descriptors).

A work item is ``(b, time tile)``: its program loads ``cos`` / ``sin`` for ``BT`` positions once and rotates every
query head then every key head at those positions (``k`` may have fewer heads than ``q``). The head layout
(``[B, H, T, D]`` or ``[B, T, H, D]``) is handled by strides. Only the first ``R = cos.shape[-1]`` dims rotate
(two half tiles of ``BH = next_pow2(R/2)`` columns); the tail ``D - R`` is copied through (``BP`` columns). The
backward also accumulates ``dcos`` / ``dsin`` over the heads in the same program (per batch row, summed on the
host when ``cos`` is broadcast over the batch).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from dispatch.context import Context
from dispatch.devices import DeviceProfile, detect, known_profiles
from dispatch.ub import COUNTED, Launch, estimate
from sp_kernels.compile_check.specs import CompileSpec
from sp_kernels._tiles import DTYPE_NAMES as _DTYPE_NAMES, UNKNOWN_T, cdiv as _cdiv, next_pow2 as _next_pow2

FWD = "ours.rotary_fwd"
BWD = "ours.rotary_bwd"


# ----------------------------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------------------------

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
def _rotary_fwd_kernel(
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
def _rotary_bwd_kernel(
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


# ----------------------------------------------------------------------------------------------------------------
# tile choice and launches (pure)
# ----------------------------------------------------------------------------------------------------------------





def columns(D: int, R: int) -> tuple[int, int]:
    """``(BH, BP)``: the half-rotary tile width and the pass-through tail tile width (1 when there is no tail)."""
    return _next_pow2(max(R // 2, 1)), _next_pow2(D - R) if D > R else 1


def tile_config(profile: DeviceProfile, T: int, D: int, R: int, dtype, *, backward: bool = False) -> dict:
    """``{"BT", "BD", "BH", "BP"}`` (pure). ``BD = 2 * BH + BP`` is one head's columns; the UB model takes ``BH`` and
    ``BP`` apart (the float32 rotary halves cost the Unified Buffer far more than the copied tail).

    ``BT`` is the largest power of two ``<= 64`` (and ``<= next_pow2(T)``) whose tile fits: on an NPU the Unified
    Buffer by the ``ours.rotary_fwd`` / ``_bwd`` model (double-buffered preferred), then halved while fewer work
    items than vector cores would leave cores idle; on CUDA at most 8192 elements and the model bytes within the
    per-block shared memory; on the CPU interpreter ``BT <= 16`` (tests exercise tails).
    """
    T = max(int(T), 1)
    BH, BP = columns(D, R)
    BD = 2 * BH + BP
    kernel = BWD if backward else FWD
    dt = dtype if dtype in _DTYPE_NAMES else torch.float32
    bts = [b for b in (64, 32, 16, 8, 4, 2, 1) if b <= _next_pow2(T)]
    if profile.type == "cpu":
        BT = min(16, bts[0])
    elif profile.type == "npu" and profile.ub_bytes:
        fits = [(est.fits_double_buffered, bt) for bt in bts
                for est in [estimate(kernel, arch=profile, dtype=dt, BT=bt, BH=BH, BP=BP)] if est.fits]
        BT = max(fits)[1] if fits else 1
    else:
        limit = profile.shared_memory_bytes or 48 * 1024
        ok = [bt for bt in bts
              if bt * BD <= 8192 and COUNTED[kernel].bytes(dt.itemsize, BT=bt, BD=BD)[0] <= limit]
        BT = ok[0] if ok else 1
    return {"BT": BT, "BD": BD, "BH": BH, "BP": BP}


def _grid(profile: DeviceProfile, items: int) -> int:
    items = max(1, int(items))
    if profile.type == "npu":
        return min(items, profile.vector_cores or 1, profile.max_grid or items)
    if profile.type == "cpu":
        return min(items, 3)
    return min(items, profile.max_grid or items)


def plan(profile: DeviceProfile, B: int, T: int, D: int, R: int, dtype, backward: bool = False) -> Launch:
    cfg = tile_config(profile, T, D, R, dtype, backward=backward)
    if profile.type == "npu":
        cores = profile.vector_cores or 1
        while B * _cdiv(T, cfg["BT"]) < cores and cfg["BT"] > 1:
            cfg["BT"] //= 2
    grid = _grid(profile, B * _cdiv(max(T, 1), cfg["BT"]))
    return Launch(BWD if backward else FWD, {"BT": cfg["BT"], "BH": cfg["BH"], "BP": cfg["BP"]}, grid)


def launches(ctx: Context) -> tuple[Launch, ...]:
    s = ctx.shapes
    B, T, D, R = s.get("B", 1), s.get("T", UNKNOWN_T), s["D"], s.get("R", s["D"])
    out = [plan(ctx.device, B, T, D, R, ctx.dtype)]
    if ctx.requires_grad:
        out.append(plan(ctx.device, B, T, D, R, ctx.dtype, backward=True))
    return tuple(out)


def supports(ctx: Context) -> tuple[bool, str]:
    if ctx.dtype not in _DTYPE_NAMES:
        return False, f"Triton kernels take bf16/fp16/fp32, not {str(ctx.dtype).replace('torch.', '')}"
    return True, ""


# ----------------------------------------------------------------------------------------------------------------
# launcher
# ----------------------------------------------------------------------------------------------------------------

def _strides(x: torch.Tensor, unsqueeze_dim: int) -> tuple[int, int, int, int]:
    """``(heads, stride_b, stride_h, stride_t)`` of a contiguous ``x``."""
    if unsqueeze_dim == 1:
        return x.shape[1], x.stride(0), x.stride(1), x.stride(2)
    return x.shape[2], x.stride(0), x.stride(2), x.stride(1)


def _launch_cfg(profile, B, T, D, R, dtype, backward, tile):
    if tile:
        BH, BP = columns(D, R)
        cfg = {"BT": tile["BT"], "BH": BH, "BP": BP}
        grid = tile.get("grid") or _grid(profile, B * _cdiv(max(T, 1), tile["BT"]))
        return cfg, grid
    launch = plan(profile, B, T, D, R, dtype, backward)
    BH, BP = columns(D, R)
    return {"BT": launch.tile["BT"], "BH": BH, "BP": BP}, launch.grid


def _common(q, k, cos, unsqueeze_dim):
    B = q.shape[0]
    T = q.shape[2] if unsqueeze_dim == 1 else q.shape[1]
    D, R = q.shape[-1], cos.shape[-1]
    H, q_sb, q_sh, q_st = _strides(q, unsqueeze_dim)
    HK, k_sb, k_sh, k_st = _strides(k, unsqueeze_dim)
    cos_sb = 0 if cos.shape[0] == 1 else cos.stride(0)
    return B, T, D, R, (B, T, H, HK, D, q_sb, q_sh, q_st, k_sb, k_sh, k_st, cos_sb)


class RotaryFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, cos, sin, unsqueeze_dim, tile):
        B, T, D, R, args = _common(q, k, cos, unsqueeze_dim)
        out_dtype = torch.promote_types(q.dtype, cos.dtype)
        oq = torch.empty(q.shape, dtype=out_dtype, device=q.device)
        ok = torch.empty(k.shape, dtype=out_dtype, device=k.device)
        cfg, grid = _launch_cfg(detect(q.device), B, T, D, R, q.dtype, False, tile and tile.get("fwd"))
        if q.numel() or k.numel():
            _rotary_fwd_kernel[(grid,)](q, k, cos, sin, oq, ok, *args, R=R, BT=cfg["BT"], BH=cfg["BH"],
                                        BP=cfg["BP"], HAS_TAIL=D > R)
        ctx.save_for_backward(q, k, cos, sin)
        ctx.unsqueeze_dim = unsqueeze_dim
        ctx.tile = tile and tile.get("bwd")
        return oq, ok

    @staticmethod
    def backward(ctx, doq, dok):
        q, k, cos, sin = ctx.saved_tensors
        B, T, D, R, args = _common(q, k, cos, ctx.unsqueeze_dim)
        doq = torch.zeros(q.shape, dtype=cos.dtype, device=q.device) if doq is None else doq.contiguous()
        dok = torch.zeros(k.shape, dtype=cos.dtype, device=k.device) if dok is None else dok.contiguous()
        dq, dk = torch.empty_like(q), torch.empty_like(k)
        dcos = torch.zeros(B, T, R, dtype=torch.float32, device=q.device)
        dsin = torch.zeros(B, T, R, dtype=torch.float32, device=q.device)
        cfg, grid = _launch_cfg(detect(q.device), B, T, D, R, q.dtype, True, ctx.tile)
        if q.numel() or k.numel():
            _rotary_bwd_kernel[(grid,)](q, k, cos, sin, doq, dok, dq, dk, dcos, dsin, *args, R=R, BT=cfg["BT"],
                                        BH=cfg["BH"], BP=cfg["BP"], HAS_TAIL=D > R)
        if cos.shape[0] == 1:
            dcos, dsin = dcos.sum(0, keepdim=True), dsin.sum(0, keepdim=True)
        return dq, dk, dcos.to(cos.dtype), dsin.to(sin.dtype), None, None


def rotary_triton(q, k, cos, sin, unsqueeze_dim=1, *, tile: dict | None = None):
    """Validated arguments as :func:`kernels.apply_rotary_pos_emb`.

    ``tile`` (tests) overrides the choice: ``{"fwd": {"BT"[, "grid"]}, "bwd": {"BT"[, "grid"]}}``.
    """
    q, k, cos, sin = q.contiguous(), k.contiguous(), cos.contiguous(), sin.contiguous()
    return RotaryFunction.apply(q, k, cos, sin, unsqueeze_dim, tile)


# ----------------------------------------------------------------------------------------------------------------
# compile specs
# ----------------------------------------------------------------------------------------------------------------

#: Qwen3.5 / Qwen3-Next attention heads: head_dim 256 with partial rotary 0.25 (R = 64); full rotary for contrast.
QWEN_DR = ((256, 64), (256, 256), (128, 64), (128, 128))
QWEN_T = (1, 63, 4096, 65536)
QWEN_B = 1


def compile_specs() -> list[CompileSpec]:
    """Every (kernel, tile, dtype) :func:`plan` picks for Qwen3.5 shapes on the known CUDA / NPU profiles
    (``q``, ``k``, ``cos``, ``sin`` in one dtype, as transformers' rotary embedding returns ``x``'s dtype)."""
    specs: dict[str, CompileSpec] = {}
    profiles = [p for p in known_profiles().values() if p.type in ("cuda", "npu")]
    ints = {n: "i32" for n in ("B", "T", "H", "HK", "D", "q_sh", "q_st", "k_sh", "k_st")}
    ints.update({"q_sb": "i64", "k_sb": "i64", "cos_sb": "i32"})
    for dtype, name in _DTYPE_NAMES.items():
        ptr = f"*{name}"
        for profile in profiles:
            for D, R in QWEN_DR:
                BH, BP = columns(D, R)
                for T in QWEN_T:
                    for backward in (False, True):
                        launch = plan(profile, QWEN_B, T, D, R, dtype, backward)
                        const = {"R": R, "BT": launch.tile["BT"], "BH": BH, "BP": BP, "HAS_TAIL": D > R}
                        if backward:
                            sig = {n: ptr for n in ("q", "k", "cos", "sin", "doq", "dok", "dq", "dk")}
                            sig.update({"dcos": "*fp32", "dsin": "*fp32"}, **ints)
                            fn = "_rotary_bwd_kernel"
                        else:
                            sig = {n: ptr for n in ("q", "k", "cos", "sin", "oq", "ok")}
                            sig.update(ints)
                            fn = "_rotary_fwd_kernel"
                        tile = dict(launch.tile)
                        spec = CompileSpec(launch.kernel, __name__, fn, sig, const, name, tile,
                                           note=f"{profile.spec} T={T} D={D} R={R}")
                        specs.setdefault((profile.type, spec.key), spec)
    return list(specs.values())
