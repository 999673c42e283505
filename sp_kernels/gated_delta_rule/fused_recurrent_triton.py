"""Our portable Triton fused recurrent gated delta rule, FORWARD only (decode and short sequences).

One work item per ``(sequence, value head, value tile)``: its program holds the ``[BK, BV]`` float32 state slice
(all of ``K``, ``BV`` columns of ``V``) in registers / the Unified Buffer and walks the sequence token by token::

    S = exp(g_t) S ;  S += k_t (beta_t (v_t - S^T k_t))^T ;  o_t = S^T (scale q_t)

with ``q`` / ``k`` optionally L2-normalised in the kernel (eps 1e-6, as fla), grouped value heads (value head
``hv`` reads query/key head ``hv // (HV / H)``), initial / final states and packed sequences. The grid is
persistent on an NPU (one program per vector core). Plain pointer arithmetic with masks only (no block pointers,
no tensor descriptors): one source for triton and triton-ascend.

There is no backward: :func:`supports` rejects contexts that need grad and long sequences (the chunked form is
the right algorithm there).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from dispatch.context import Context
from dispatch.devices import DeviceProfile, detect, known_profiles
from dispatch.ub import COUNTED, Launch, estimate
from sp_kernels.compile_check.specs import CompileSpec
from sp_kernels._tiles import DTYPE_NAMES as _DTYPE_NAMES, cdiv as _cdiv, next_pow2 as _next_pow2

KERNEL = "ours.fused_recurrent_gated_delta_rule_fwd"
#: the longest sequence this form is chosen for; longer ones belong to the chunked form
MAX_T = 64
MAX_K = 256


@triton.jit
def _fused_recurrent_gdr_fwd_kernel(
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


# ----------------------------------------------------------------------------------------------------------------
# tile choice and launches (pure)
# ----------------------------------------------------------------------------------------------------------------





def tile_config(profile: DeviceProfile, K: int, V: int, dtype, items: int | None = None) -> dict:
    """``{"BK", "BV"}`` (pure). ``BK = next_pow2(K)`` (the whole key dim: the state update needs it);
    ``BV`` a power of two ``<= min(128, next_pow2(V))``:

    * NPU: the largest that fits the Unified Buffer by the ``ours.fused_recurrent_gated_delta_rule_fwd`` model
      (double-buffered preferred), then halved (down to 16) while ``items`` (sequences x value heads x value
      tiles) would leave vector cores idle;
    * CUDA: at most 4096 state elements (registers of 4 warps) and model bytes within the shared memory;
    * CPU (interpreter, tests): ``BV <= 16``, so that value tiling is exercised.
    """
    BK = _next_pow2(max(K, 1))
    top = min(128, _next_pow2(max(V, 1)))
    bvs = [b for b in (128, 64, 32, 16, 8, 4, 2, 1) if b <= top]
    dt = dtype if dtype in _DTYPE_NAMES else torch.float32
    if profile.type == "cpu":
        return {"BK": BK, "BV": min(16, top)}
    if profile.type == "npu" and profile.ub_bytes:
        fits = [(est.fits_double_buffered, bv) for bv in bvs
                for est in [estimate(KERNEL, arch=profile, dtype=dt, BK=BK, BV=bv)] if est.fits]
        BV = max(fits)[1] if fits else 1
        if items is not None:
            cores = profile.vector_cores or 1
            while BV > 16 and items * _cdiv(V, BV) < cores:
                BV //= 2
        return {"BK": BK, "BV": BV}
    limit = profile.shared_memory_bytes or 48 * 1024
    ok = [bv for bv in bvs if BK * bv <= 4096 and COUNTED[KERNEL].bytes(dt.itemsize, BK=BK, BV=bv)[0] <= limit]
    return {"BK": BK, "BV": ok[0] if ok else 1}


def _grid(profile: DeviceProfile, items: int) -> int:
    items = max(1, int(items))
    if profile.type == "npu":
        return min(items, profile.vector_cores or 1, profile.max_grid or items)
    if profile.type == "cpu":
        return min(items, 3)
    return min(items, profile.max_grid or items)


def plan(profile: DeviceProfile, N: int, HV: int, K: int, V: int, dtype) -> Launch:
    cfg = tile_config(profile, K, V, dtype, items=N * HV)
    return Launch(KERNEL, cfg, _grid(profile, N * HV * _cdiv(V, cfg["BV"])))


def launches(ctx: Context) -> tuple[Launch, ...]:
    """The one forward launch (``N`` is ``B``, or at most ``T`` packed sequences)."""
    s = ctx.shapes
    N = s.get("T", MAX_T) if ctx.packed else s.get("B", 1)
    return (plan(ctx.device, max(N, 1), s.get("HV", s.get("H", 1)), s["K"], s["V"], ctx.dtype),)


def supports(ctx: Context) -> tuple[bool, str]:
    if ctx.requires_grad:
        return False, "forward only (no backward kernel): training uses the chunked form"
    T = ctx.shapes.get("T")
    if T is None or T > MAX_T:
        return False, f"T={T} > {MAX_T}: use the chunked form for long sequences"
    if ctx.dtype not in _DTYPE_NAMES:
        return False, f"Triton kernels take bf16/fp16/fp32, not {str(ctx.dtype).replace('torch.', '')}"
    if ctx.shapes.get("K", 0) > MAX_K:
        return False, f"K={ctx.shapes['K']} > {MAX_K}: the [K, BV] state tile would not fit"
    return True, ""


# ----------------------------------------------------------------------------------------------------------------
# launcher and implementation
# ----------------------------------------------------------------------------------------------------------------

def fused_recurrent_gated_delta_rule_triton(q, k, v, g, beta, scale, initial_state=None, output_final_state=False,
                                            cu_seqlens=None, use_qk_l2norm_in_kernel=False, *,
                                            tile: dict | None = None):
    """Validated arguments as :func:`kernels.chunk_gated_delta_rule`; forward only (outputs carry no graph).

    Returns ``o`` ``[B, T, HV, V]`` in ``v``'s dtype and the final state ``[N, HV, K, V]`` float32 (or ``None``).
    ``tile`` (tests) overrides the choice: ``{"BV"[, "grid"]}``.
    """
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    q, k, v, g, beta = (x.detach().contiguous() for x in (q, k, v, g, beta))
    if cu_seqlens is None:
        bos, lens = [b * T for b in range(B)], [T] * B
    else:
        cu = cu_seqlens.tolist()
        bos, lens = cu[:-1], [e - s for s, e in zip(cu[:-1], cu[1:])]
    N = len(lens)
    profile = detect(q.device)
    if tile:
        cfg = {"BK": _next_pow2(max(K, 1)), "BV": tile["BV"]}
        grid = tile.get("grid") or _grid(profile, N * HV * _cdiv(V, cfg["BV"]))
    else:
        launch = plan(profile, N, HV, K, V, q.dtype)
        cfg, grid = dict(launch.tile), launch.grid
    o = torch.empty(B, T, HV, V, dtype=v.dtype, device=v.device)
    h0 = initial_state.detach().contiguous() if initial_state is not None else None
    ht = torch.empty(N, HV, K, V, dtype=torch.float32, device=q.device) if output_final_state else None
    seq_bos = torch.tensor(bos, dtype=torch.int32, device=q.device)
    seq_len = torch.tensor(lens, dtype=torch.int32, device=q.device)
    if N * HV * V * K:
        _fused_recurrent_gdr_fwd_kernel[(grid,)](
            q, k, v, g, beta, o, h0 if h0 is not None else q, ht if ht is not None else o, seq_bos, seq_len,
            float(scale), N, H, HV, K, V,
            BK=cfg["BK"], BV=cfg["BV"], HAS_H0=h0 is not None, STORE_FINAL=ht is not None,
            L2NORM=bool(use_qk_l2norm_in_kernel),
        )
    elif ht is not None:
        ht.zero_()
        if h0 is not None:
            ht.copy_(h0)
    return o, ht


# ----------------------------------------------------------------------------------------------------------------
# compile specs
# ----------------------------------------------------------------------------------------------------------------

#: Qwen3.5 / Qwen3-Next linear attention: K = V = 128, value heads 32 or 64 over key heads 16 (and sp shards).
QWEN_KV = ((128, 128),)
QWEN_NHV = (1, 4, 8, 32, 64, 256, 2048)  # sequences x local value heads


def compile_specs() -> list[CompileSpec]:
    """Every (tile, dtype) :func:`plan` picks for Qwen3.5 decode shapes on the known CUDA / NPU profiles (with
    initial and final state and in-kernel l2norm: the variant the decode path runs)."""
    specs: dict[str, CompileSpec] = {}
    profiles = [p for p in known_profiles().values() if p.type in ("cuda", "npu")]
    for dtype, name in _DTYPE_NAMES.items():
        ptr = f"*{name}"
        sig = {n: ptr for n in ("q", "k", "v", "g", "beta", "o")}
        sig.update({"h0": "*fp32", "ht": "*fp32", "seq_bos": "*i32", "seq_len": "*i32", "scale": "fp32",
                    "N": "i32", "H": "i32", "HV": "i32", "K": "i32", "V": "i32"})
        for profile in profiles:
            for K, V in QWEN_KV:
                for items in QWEN_NHV:
                    launch = plan(profile, items, 1, K, V, dtype)
                    const = {"BK": launch.tile["BK"], "BV": launch.tile["BV"], "HAS_H0": True, "STORE_FINAL": True,
                             "L2NORM": True}
                    spec = CompileSpec(KERNEL, __name__, "_fused_recurrent_gdr_fwd_kernel", sig, const, name,
                                       dict(launch.tile), note=f"{profile.spec} N*HV={items} K={K} V={V}")
                    specs.setdefault((profile.type, spec.key), spec)
    return list(specs.values())
