"""CompileSpecs for flash-linear-attention 0.6's Triton-Ascend causal conv kernels
(``fla/modules/causal_conv1d/backends/triton_ascend.py``) over a grid of tiles: the calibration grid of
:mod:`sp_kernels.dispatch.ub` (``sp_kernels/dispatch/data/ub_table.json``).

fla wraps the kernels in ``triton.heuristics``; here every flag they would derive is given as the training path
sets it for Qwen3.5's short conv: weight yes, **no bias**, ``activation='silu'``, no residual, no initial / final
state. ``None`` pointers are specialised constants, as at a launch. Each kernel comes packed (``[B, T, D]``) and,
as ``<name>.varlen``, for packed sequences (``cu_seqlens`` + ``chunk_indices``). The core-grid backward is
launched twice on the packed path (fla splits off the last T-chunk): ``TAIL_MODE=0`` (block-pointer bulk, the
name without suffix) and ``TAIL_MODE=1`` (masked tail, ``.tail``); varlen runs ``TAIL_MODE=2``.

``D`` is a constexpr: it is fixed at 4096 (it only enters masks); ``W=4`` (Qwen3.5).
"""
from __future__ import annotations

from sp_kernels.compile_check.specs import CompileSpec

MODULE = "fla.modules.causal_conv1d.backends.triton_ascend"
D = 4096
T = 4096
W = 4
BTS = (8, 16, 32, 64, 128)
BDS = (8, 16, 32, 64, 128, 256)
DTYPES = ("bf16", "fp32")


def _ptrs(dtype: str, *names: str) -> dict:
    return {n: f"*{dtype}" for n in names}


def _varlen(varlen: bool) -> tuple[dict, dict]:
    """(signature, constexprs) of ``cu_seqlens`` / ``chunk_indices``."""
    if varlen:
        return {"cu_seqlens": "*i64", "chunk_indices": "*i64"}, {"IS_VARLEN": True}
    return {}, {"cu_seqlens": None, "chunk_indices": None, "IS_VARLEN": False}


def fwd_coregrid(dtype, BT, BD, varlen=False) -> CompileSpec:
    sig_v, cx_v = _varlen(varlen)
    return CompileSpec(
        "fla.causal_conv1d_fwd_coregrid" + (".varlen" if varlen else ""), MODULE, "causal_conv1d_fwd_coregrid_kernel",
        {**_ptrs(dtype, "x", "y", "y_linear", "weight"), **sig_v, "B": "i32", "T": "i32", "NUM_CHKS": "i32",
         "NUM_BLKS_D": "i32"},
        {"bias": None, "residual": None, "initial_state": None, **cx_v, "D": D, "W": W, "BT": BT, "BD": BD,
         "ACTIVATION": "silu", "HAS_WEIGHT": True, "HAS_BIAS": False, "HAS_RESIDUAL": False, "HAS_Y_LINEAR": True,
         "USE_INITIAL_STATE": False},
        dtype, {"BT": BT, "BD": BD, "W": W}, note="calibration grid; training fwd (silu, saves y_linear)")


def bwd_coregrid(dtype, BT, BD, tail_mode=0) -> CompileSpec:
    varlen = tail_mode == 2
    sig_v, cx_v = _varlen(varlen)
    suffix = {0: "", 1: ".tail", 2: ".varlen"}[tail_mode]
    return CompileSpec(
        "fla.causal_conv1d_bwd_coregrid" + suffix, MODULE, "causal_conv1d_bwd_coregrid_kernel",
        {**_ptrs(dtype, "x", "y", "weight", "dy", "dx"), "dw": "*fp32", **sig_v, "B": "i32", "T": "i32",
         "NUM_BLKS_D": "i32", "NUM_CHKS": "i32", "NT_STRIDE": "i32", "I_T_OFFSET": "i32"},
        {"initial_state": None, "dh0": None, "dht": None, "db": None, **cx_v, "D": D, "W": W, "BT": BT, "BD": BD,
         "ACTIVATION": "silu", "HAS_WEIGHT": True, "HAS_BIAS": False, "USE_INITIAL_STATE": False,
         "USE_FINAL_STATE": False, "TAIL_MODE": tail_mode},
        dtype, {"BT": BT, "BD": BD, "W": W}, note=f"calibration grid; training bwd, TAIL_MODE={tail_mode}")


def fwd_legacy(dtype, BT, BD, varlen=False) -> CompileSpec:
    sig_v, cx_v = _varlen(varlen)
    nt_per_block = 4 if dtype != "fp32" else 1  # fla's _launch_fwd_core
    nt = T // BT
    return CompileSpec(
        "fla.causal_conv1d_fwd" + (".varlen" if varlen else ""), MODULE, "causal_conv1d_fwd_kernel",
        {**_ptrs(dtype, "x", "y", "weight"), **sig_v, "B": "i32", "T": "i32", "stride_x_n": "i64",
         "stride_x_t": "i32"},
        {"bias": None, "residual": None, "initial_state": None, **cx_v, "stride_x_d": 1, "D": D, "W": W, "BT": BT,
         "BW": W, "BD": BD, "NT": nt, "NT_GRID": -(-nt // nt_per_block), "MAX_NT_PER_BLOCK": nt_per_block,
         "NT_GRID_OFFSET": 0, "ACTIVATION": "silu", "HAS_WEIGHT": True, "HAS_BIAS": False, "HAS_RESIDUAL": False,
         "USE_INITIAL_STATE": False},
        dtype, {"BT": BT, "BD": BD, "W": W}, note="calibration grid; legacy fwd (silu)")


def bwd_dx(dtype, BT, BD, varlen=False) -> CompileSpec:
    sig_v, cx_v = _varlen(varlen)
    return CompileSpec(
        "fla.causal_conv1d_bwd_dx" + (".varlen" if varlen else ""), MODULE, "causal_conv1d_bwd_dx_kernel",
        {**_ptrs(dtype, "dy", "weight", "dx"), **sig_v, "B": "i32", "T": "i32", "stride_dy_n": "i64",
         "stride_dy_t": "i32", "stride_dx_n": "i64", "stride_dx_t": "i32"},
        {"dht": None, **cx_v, "stride_dy_d": 1, "stride_dx_d": 1, "D": D, "W": W, "BT": BT, "BW": W, "BD": BD,
         "HAS_WEIGHT": True, "USE_FINAL_STATE": False, "CHUNK_OFFSET": 0},
        dtype, {"BT": BT, "BD": BD, "W": W}, note="calibration grid; legacy bwd dx")


def bwd_dwdb(dtype, BT, BD, varlen=False) -> CompileSpec:
    sig_v, cx_v = _varlen(varlen)
    return CompileSpec(
        "fla.causal_conv1d_bwd_dwdb" + (".varlen" if varlen else ""), MODULE, "causal_conv1d_bwd_dwdb_kernel",
        {**_ptrs(dtype, "x", "dy"), "dw": "*fp32", **sig_v, "B": "i32", "T": "i32", "stride_x_n": "i64",
         "stride_x_t": "i32", "stride_dy_n": "i64", "stride_dy_t": "i32"},
        {"initial_state": None, "db": None, **cx_v, "stride_x_d": 1, "stride_dy_d": 1, "D": D, "W": W, "BT": BT,
         "BW": W, "BD": BD, "HAS_WEIGHT": True, "HAS_BIAS": False, "USE_INITIAL_STATE": False, "CHUNK_OFFSET": 0,
         "NT": T // BT},
        dtype, {"BT": BT, "BD": BD, "W": W}, note="calibration grid; legacy bwd dw (no bias)")


GENERIC_MODULE = "fla.modules.causal_conv1d.ops"
#: the autotune set of fla's generic (GPU) conv kernels: ``BD`` in 16..128; ``BT`` is the host's chunk size (64)
GENERIC_BDS = (16, 32, 64, 128)
GENERIC_BT = 64


def _strides(*names: str) -> tuple[dict, dict]:
    """(signature, constexprs) of ``[B, T, D]`` strides: the batch stride i64, the time stride i32, the channel
    stride 1 (a specialised constant at a launch on contiguous tensors)."""
    sig, cx = {}, {}
    for n in names:
        sig[f"stride_{n}_n"], sig[f"stride_{n}_t"], cx[f"stride_{n}_d"] = "i64", "i32", 1
    return sig, cx


def bwd_generic(dtype, BT, BD, bias=True, module=GENERIC_MODULE) -> CompileSpec:
    """fla's generic autotuned ``causal_conv1d_bwd_kernel`` (``fla/modules/causal_conv1d/ops.py``; fla 0.5.2:
    ``fla/modules/conv/triton/kernels.py``): the kernel fla runs where its Triton-Ascend backend is not dispatched.
    Training configuration with silu and the weight; ``bias`` adds ``db`` (the configuration the 910B overflow
    was reported in). ``y`` is the pre-activation, ``dw`` / ``db`` per-chunk float32 partials, as fla's host allocates."""
    sig_s, cx_s = _strides("x", "dx", "dy")
    extra = {"NB": 1} if module != GENERIC_MODULE else {}  # fla 0.5.2's kernel takes an unused NB constexpr
    return CompileSpec(
        "fla.causal_conv1d_bwd_generic", module, "causal_conv1d_bwd_kernel",
        {**_ptrs(dtype, "x", "y", "weight", "dy", "dx"), "dw": "*fp32", **({"db": "*fp32"} if bias else {}),
         "B": "i32", "T": "i32", **sig_s},
        {"initial_state": None, "dht": None, "cu_seqlens": None, "chunk_indices": None,
         **({} if bias else {"db": None}), **cx_s, "D": D, "W": W, "BT": BT, "BW": W, "BD": BD,
         "ACTIVATION": "silu", "HAS_WEIGHT": True, "HAS_BIAS": bias, "USE_INITIAL_STATE": False,
         "USE_FINAL_STATE": False, "IS_VARLEN": False, **extra},
        dtype, {"BT": BT, "BD": BD, "W": W},
        note=f"generic bwd (silu, weight{', bias' if bias else ''}){'' if module == GENERIC_MODULE else ' ' + module}")


def fwd_generic(dtype, BT, BD, bias=True) -> CompileSpec:
    """fla's generic autotuned ``causal_conv1d_fwd_kernel`` as the training forward launches it (silu, weight,
    ``bias``; no residual, no initial state)."""
    sig_s, cx_s = _strides("x")
    return CompileSpec(
        "fla.causal_conv1d_fwd_generic", GENERIC_MODULE, "causal_conv1d_fwd_kernel",
        {**_ptrs(dtype, "x", "y", "weight", *(("bias",) if bias else ())), "B": "i32", "T": "i32", **sig_s},
        {"residual": None, "cu_seqlens": None, "initial_state": None, "chunk_indices": None,
         **({} if bias else {"bias": None}), **cx_s, "D": D, "W": W, "BT": BT, "BW": W, "BD": BD,
         "ACTIVATION": "silu", "HAS_WEIGHT": True, "HAS_BIAS": bias, "HAS_RESIDUAL": False,
         "USE_INITIAL_STATE": False, "IS_VARLEN": False},
        dtype, {"BT": BT, "BD": BD, "W": W}, note=f"generic fwd (silu, weight{', bias' if bias else ''})")


#: the fit grid of the generic kernels' models (``sp_kernels/dispatch/data/ub_table.json``): 96 tiles a kernel
GENERIC_BTS = (1, 2, 4, 8, 16, 32, 64, 128)
GENERIC_GRID_BDS = (8, 16, 32, 64, 128, 256)


def generic_fit_specs() -> list[CompileSpec]:
    """The generic kernels (with bias) over the fit grid, bf16 and fp32."""
    return [build(dt, bt, bd) for build in (bwd_generic, fwd_generic) for dt in DTYPES for bt in GENERIC_BTS
            for bd in GENERIC_GRID_BDS]


def generic_held_out_specs() -> list[CompileSpec]:
    """Compiled after a fit to check it (``sp_kernels/dispatch/data/ub_held_out.json``; the story in
    ``sp_kernels/dispatch/data/UB_MODELS.md``): set 1 checked the first fit (6 misses of 41), set 2 the refit with set 1 (the
    backward agreed on all 28, the forward missed 4 of 24), sets 3 to 5 the forward's refits (23/24, 18/24, then
    set 5)."""
    return (generic_held_out_specs_1() + generic_held_out_specs_2() + generic_held_out_specs_3()
            + generic_held_out_specs_4() + generic_held_out_specs_5())


def generic_held_out_specs_5() -> list[CompileSpec]:
    """After the forward's fourth refit (set 4: bf16 / fp16 rows are padded to 8 columns): the forward."""
    fwd = [(8192, 1), (1024, 4), (4096, 1), (2, 8192), (4, 512), (256, 2)]
    return [fwd_generic(dt, bt, bd) for dt in ("bf16", "fp16", "fp32") for bt, bd in fwd]


def generic_held_out_specs_4() -> list[CompileSpec]:
    """After the forward's third refit (set 3: fp32 rows are 32-byte aligned, the bf16 ``[BD]`` column phase is
    lower at ``BT <= 2``): the forward, near its boundaries."""
    fwd = [(4, 1024), (2, 2048), (1, 4096), (512, 16), (4096, 2), (2048, 4), (16, 512), (1, 2048)]
    return [fwd_generic(dt, bt, bd) for dt in ("bf16", "fp16", "fp32") for bt, bd in fwd]


def generic_held_out_specs_3() -> list[CompileSpec]:
    """After the forward's second refit (set 2 found its long-``BT`` and ``[BD]``-column costs): the forward only
    (set 2 agreed on every backward tile)."""
    fwd = [(4096, 4), (1024, 32), (2048, 16), (512, 64), (2, 4096), (1, 8192), (16, 2048), (256, 16)]
    return [fwd_generic(dt, bt, bd) for dt in ("bf16", "fp16", "fp32") for bt, bd in fwd]


def generic_held_out_specs_2() -> list[CompileSpec]:
    """After the refit: fresh tiles on both sides of each boundary, all three dtypes."""
    bwd = [(1024, 1), (512, 1), (128, 4), (32, 4), (2, 1024), (8, 2), (1, 2048), (4, 1024)]
    fwd = [(1024, 16), (2048, 8), (4, 4096), (8, 1024), (32, 1024), (128, 512), (1024, 8), (4, 2048)]
    specs = [bwd_generic(dt, bt, bd) for dt in ("bf16", "fp16", "fp32") for bt, bd in bwd]
    specs += [fwd_generic(dt, bt, bd) for dt in ("bf16", "fp16", "fp32") for bt, bd in fwd]
    specs += [bwd_generic("fp16", bt, bd) for bt, bd in ((128, 8), (8, 128), (4, 128), (16, 64))]
    return specs


def generic_held_out_specs_1() -> list[CompileSpec]:
    """After the first fit: tiles off the grid (longer or wider), and fp16."""
    bwd = [(256, 2), (256, 4), (512, 2), (256, 8), (1, 512), (2, 512), (4, 512), (1, 1024)]
    fwd = [(256, 32), (256, 64), (512, 32), (256, 128), (16, 1024), (32, 512), (64, 512), (8, 2048)]
    specs = [bwd_generic(dt, bt, bd) for dt in DTYPES for bt, bd in bwd]
    specs += [fwd_generic(dt, bt, bd) for dt in DTYPES for bt, bd in fwd]
    specs += [bwd_generic("fp16", bt, bd) for bt, bd in ((64, 16), (32, 16), (16, 32), (8, 64), (2, 256), (1, 256))]
    specs += [fwd_generic("fp16", bt, bd) for bt, bd in ((128, 128), (64, 256), (128, 256))]
    return specs


def _builders():
    return [
        lambda dt, bt, bd: fwd_coregrid(dt, bt, bd),
        lambda dt, bt, bd: fwd_coregrid(dt, bt, bd, varlen=True),
        lambda dt, bt, bd: bwd_coregrid(dt, bt, bd, 0),
        lambda dt, bt, bd: bwd_coregrid(dt, bt, bd, 1),
        lambda dt, bt, bd: bwd_coregrid(dt, bt, bd, 2),
        lambda dt, bt, bd: fwd_legacy(dt, bt, bd),
        lambda dt, bt, bd: fwd_legacy(dt, bt, bd, varlen=True),
        lambda dt, bt, bd: bwd_dx(dt, bt, bd),
        lambda dt, bt, bd: bwd_dx(dt, bt, bd, varlen=True),
        lambda dt, bt, bd: bwd_dwdb(dt, bt, bd),
        lambda dt, bt, bd: bwd_dwdb(dt, bt, bd, varlen=True),
    ]


def fla_conv_specs(bts=BTS, bds=BDS, dtypes=DTYPES) -> list[CompileSpec]:
    """Every kernel variant x dtype x (BT, BD) of the grid (W=4)."""
    return [build(dt, bt, bd) for build in _builders() for dt in dtypes for bt in bts for bd in bds]


def held_out_specs() -> list[CompileSpec]:
    """Tiles off the grid (not powers of two apart from the grid's, or beyond it): compiled fresh to check the
    fitted UB models predict them (see ``sp_kernels.dispatch.ub``)."""
    tiles = [(256, 8), (256, 16), (256, 32), (512, 8), (8, 512), (16, 512), (128, 512), (512, 16)]
    return [build(dt, bt, bd) for build in _builders() for dt in DTYPES for bt, bd in tiles]
