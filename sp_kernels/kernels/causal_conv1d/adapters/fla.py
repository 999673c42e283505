"""flash-linear-attention's causal conv (Triton; CUDA and, through its Triton-Ascend backend, NPU).

The adapter translates our contract to fla's: states ``[N, D, W-1]`` <-> fla's ``[N, D, W]`` (one more column,
the oldest input, which the conv never reads). :func:`ascend_launches` lists the launches the installed fla makes on
an NPU — which kernels, by :func:`sp_kernels._fla.npu_paths` (its Triton-Ascend backend's core-grid or legacy
kernels, or its generic autotuned ones), with the tiles it would choose — so the registry can check each against
the Unified Buffer before choosing it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sp_kernels.dispatch import Context
from sp_kernels.dispatch.ub import Launch
from sp_kernels._tiles import cdiv as _cdiv, next_pow2 as _next_pow2
from sp_kernels._fla import CORE_GRID, GENERIC, npu_paths


#: the Unified Buffer models of fla's causal conv kernels on an NPU (coefficients: sp_kernels/dispatch/data/ub_models.json)
UB_MODELS = (
    "fla.causal_conv1d_fwd_coregrid", "fla.causal_conv1d_fwd_coregrid.varlen", "fla.causal_conv1d_bwd_coregrid",
    "fla.causal_conv1d_bwd_coregrid.tail", "fla.causal_conv1d_bwd_coregrid.varlen", "fla.causal_conv1d_fwd",
    "fla.causal_conv1d_bwd_dx", "fla.causal_conv1d_bwd_dwdb", "fla.causal_conv1d_bwd",
    "fla.causal_conv1d_fwd_generic", "fla.causal_conv1d_bwd_generic",
)


def to_fla_state(state: torch.Tensor | None) -> torch.Tensor | None:
    """``[N, D, W-1]`` -> fla's ``[N, D, W]`` (a zero column in front)."""
    return None if state is None else F.pad(state, (1, 0))


def from_fla_state(state: torch.Tensor | None) -> torch.Tensor | None:
    """fla's ``[N, D, W]`` -> ``[N, D, W-1]``."""
    return None if state is None else state[..., 1:]


def causal_conv1d_fla(x, weight, bias=None, activation=None, initial_state=None, output_final_state=False,
                      cu_seqlens=None):
    """Validated arguments as :func:`sp_kernels.causal_conv1d`."""
    import importlib

    causal_conv1d = importlib.import_module(npu_paths().conv_module).causal_conv1d
    y, final = causal_conv1d(x, weight=weight, bias=bias, initial_state=to_fla_state(initial_state),
                             output_final_state=output_final_state, activation=activation, cu_seqlens=cu_seqlens)
    return y, from_fla_state(final)


# --- fla 0.6 Triton-Ascend tile selection (pure: mirrors backends/triton_ascend.py) ---



def _coregrid_bd(D: int, preferred: int) -> int | None:
    bd = min(preferred, _next_pow2(max(D, 1)))
    while bd > 8 and (bd > D or D % bd):
        bd //= 2
    return None if bd > D or D % bd else bd


def _legacy_chunk(T: int) -> int:
    return min(_next_pow2(T), 64) if T not in (1, 2, 4, 8, 16, 32, 64) else min(T, 64)


#: fla's generic kernels: ``BT`` is the host's chunk size, ``BD`` autotuned over this set (``ops.py``)
GENERIC_BT, GENERIC_BDS = 64, (16, 32, 64, 128)


def _generic_launches(ctx: Context, B: int, T: int, D: int, W: int) -> tuple[Launch, ...]:
    """fla's generic ``causal_conv1d_fwd_kernel`` / ``causal_conv1d_bwd_kernel`` (the backward recomputes the
    pre-activation with the forward kernel first). Each is autotuned over ``BD`` in 16..128: triton-ascend's
    autotuner skips a configuration that does not compile, so a launch fails only when none does — the smallest,
    ``BD=16``, stands for the set (the need grows with ``BD``)."""
    BT, BD = GENERIC_BT, GENERIC_BDS[0]
    grid = _cdiv(D, BD) * _cdiv(T, BT) * B
    note = f"smallest of fla's autotune set BD {GENERIC_BDS[0]}..{GENERIC_BDS[-1]}"
    launches = [Launch("fla.causal_conv1d_fwd_generic", {"BT": BT, "BD": BD, "W": W}, grid, note)]
    if ctx.requires_grad:
        launches.append(Launch("fla.causal_conv1d_bwd_generic", {"BT": BT, "BD": BD, "W": W}, grid, note))
    return tuple(launches)


def ascend_launches(ctx: Context) -> tuple[Launch, ...]:
    """The launches the installed fla makes on an Ascend NPU for ``ctx`` (forward; backward too when grad is
    needed), by the kernels :func:`~sp_kernels._fla.npu_paths` says it runs there.

    fla 0.6's Triton-Ascend backend: on the training path (contiguous input, no initial state, a channel tile of
    >= 16 dividing D) the core-grid kernels, a persistent grid of one program per vector core; otherwise (and always
    in fla 0.5.2, which has no core grid) the legacy kernels tile ``(D, T)``. Without the backend (dispatch
    disabled) the generic autotuned kernels. An unknown length (``T`` not in the context) is taken as a long
    sequence.
    """
    s = ctx.shapes
    B, T, D, W = s.get("B", 1), s.get("T", 1 << 20), s["D"], s["W"]
    path = npu_paths().conv
    if path == GENERIC:
        return _generic_launches(ctx, B, T, D, W)
    cores = ctx.device.vector_cores or 1
    f32 = ctx.dtype not in (torch.bfloat16, torch.float16)
    bd = _coregrid_bd(D, 64)
    if path == CORE_GRID and bd is not None and bd >= 16:
        BD = _coregrid_bd(D, 256)
        BT = min(32, _next_pow2(_cdiv(max(16, B * T), cores)))
        launches = [Launch("fla.causal_conv1d_fwd_coregrid", {"BT": BT, "BD": BD, "W": W}, cores)]
        if ctx.requires_grad:
            BT = min(32 if f32 else 64, _next_pow2(_cdiv(max(16, B * T), cores)))
            chunks = _cdiv(T, BT) * B
            BD = _coregrid_bd(D, 64 if _cdiv(D, 64) * chunks > cores // 2 else 32)
            launches.append(Launch("fla.causal_conv1d_bwd_coregrid", {"BT": BT, "BD": BD, "W": W}, cores))
        return tuple(launches)
    # legacy tiling (fp32 branch of fla's _npu_tile_config / _npu_bwd_tile_config; the conservative one)
    BT = _legacy_chunk(T)
    BD = 8 if D >= 512 else 16
    if D >= 8192:
        BT = min(BT, 8)
    elif D >= 1024:
        BT = min(BT, 32)
    launches = [Launch("fla.causal_conv1d_fwd", {"BT": BT, "BD": BD, "W": W}, _cdiv(D, BD) * _cdiv(T, BT) * B)]
    if ctx.requires_grad:
        BT = _legacy_chunk(T)
        BD = 16
        if D >= 2048:
            BD, BT = 8, min(BT, 8)
        elif D >= 512:
            BD, BT = 8, min(BT, 16 if D >= 1024 else 32)
        launches.append(Launch("fla.causal_conv1d_bwd", {"BT": BT, "BD": BD, "W": W}, _cdiv(D, BD) * _cdiv(T, BT) * B))
    return tuple(launches)
