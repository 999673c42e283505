"""Compile specs of our Triton causal conv1d: the kernels' own arguments (read from the ``@triton.jit`` functions),
the launcher's constexprs, and the tiles :func:`.triton_plan.plan` picks (the calibration grid of the UB models is
:mod:`sp_kernels.compile_check.ours_specs`)."""
from __future__ import annotations

from typing import Mapping

from sp_kernels.dispatch.devices import known_profiles
from sp_kernels._tiles import DTYPE_NAMES
from sp_kernels.kernels.causal_conv1d import triton_kernels, triton_plan
from sp_kernels.kernels.causal_conv1d.triton_launch import bwd_constexprs, fwd_constexprs
from sp_kernels.compile_check.specs import CompileSpec, kernel_spec

#: the arguments that are not a pointer in the input dtype
_WORK = {"tile_seq": "*i32", "tile_start": "*i32", "seq_bos": "*i32", "seq_len": "*i32", "D": "i32", "n_tiles": "i32"}
FWD_TYPES = _WORK
BWD_TYPES = {**_WORK, "dw_part": "*fp32", "db_part": "*fp32", "n_groups": "i32"}

#: Qwen3.5 / Qwen3-Next conv channel counts (q+k+v of the linear-attention layers) and their sp shards.
QWEN_D = sorted({d // sp for d in (2048, 4096, 8192, 10240) for sp in (1, 2, 4, 8)})
QWEN_T = (1, 63, 4096, 65536)
QWEN_W = 4


def spec(tile: Mapping[str, int], dtype: str, backward: bool = False, note: str = "") -> CompileSpec:
    """The most demanding variant at ``tile`` (``{"BT", "BD", "W"}``): bias, SiLU, initial state, final state (its
    gradient in the backward)."""
    if backward:
        return kernel_spec(triton_plan.BWD, triton_kernels.causal_conv1d_bwd_kernel, dtype,
                           bwd_constexprs(tile, has_bias=True, has_h0=True, act=True, has_dfinal=True), tile,
                           types=BWD_TYPES, note=note)
    return kernel_spec(triton_plan.FWD, triton_kernels.causal_conv1d_fwd_kernel, dtype,
                       fwd_constexprs(tile, has_bias=True, has_h0=True, act=True, store_final=True), tile,
                       types=FWD_TYPES, note=note)


def compile_specs() -> list[CompileSpec]:
    """Every (kernel, tile, dtype) the plan picks for Qwen3.5 shapes on the known CUDA / NPU profiles."""
    specs: dict[tuple, CompileSpec] = {}
    profiles = [p for p in known_profiles().values() if p.type in ("cuda", "npu")]
    for dtype, name in DTYPE_NAMES.items():
        for profile in profiles:
            for D in QWEN_D:
                for T in QWEN_T:
                    for backward in (False, True):
                        launch = triton_plan.plan(profile, 1, T, D, QWEN_W, dtype, backward)
                        s = spec(launch.tile, name, backward, note=f"{profile.spec} T={T} D={D}")
                        specs.setdefault((profile.type, s.key), s)
    return list(specs.values())
