"""Compile specs of our Triton rotary embedding: the kernels' own arguments (read from the ``@triton.jit``
functions), the launcher's constexprs, and the tiles :func:`.triton_plan.plan` picks (the calibration grid of the UB
models is :mod:`sp_kernels.compile_check.ours_specs`)."""
from __future__ import annotations

from sp_kernels.dispatch.devices import known_profiles
from sp_kernels._tiles import DTYPE_NAMES
from sp_kernels.compile_check.specs import CompileSpec, kernel_spec
from sp_kernels.kernels.apply_rotary_pos_emb import triton_kernels, triton_plan
from sp_kernels.kernels.apply_rotary_pos_emb.triton_launch import constexprs

#: the arguments that are not a pointer in the input dtype
TYPES = {**{n: "i32" for n in ("B", "T", "H", "HK", "D", "q_sh", "q_st", "k_sh", "k_st", "cos_sb")},
         "q_sb": "i64", "k_sb": "i64"}
BWD_TYPES = {**TYPES, "dcos": "*fp32", "dsin": "*fp32"}

#: Qwen3.5 / Qwen3-Next attention heads: head_dim 256 with partial rotary 0.25 (R = 64); full rotary for contrast.
QWEN_DR = ((256, 64), (256, 256), (128, 64), (128, 128))
QWEN_T = (1, 63, 4096, 65536)
QWEN_B = 1


def spec(BT: int, D: int, R: int, dtype: str, backward: bool = False, note: str = "") -> CompileSpec:
    """``q``, ``k``, ``cos``, ``sin`` in one dtype (transformers' rotary embedding returns ``x``'s dtype); the tail
    copy when ``D > R``."""
    BH, BP = triton_plan.columns(D, R)
    tile = {"BT": BT, "BH": BH, "BP": BP}
    if backward:
        return kernel_spec(triton_plan.BWD, triton_kernels.rotary_bwd_kernel, dtype, constexprs(tile, D, R), tile,
                           types=BWD_TYPES, note=note)
    return kernel_spec(triton_plan.FWD, triton_kernels.rotary_fwd_kernel, dtype, constexprs(tile, D, R), tile,
                       types=TYPES, note=note)


def compile_specs() -> list[CompileSpec]:
    """Every (kernel, tile, dtype) the plan picks for Qwen3.5 shapes on the known CUDA / NPU profiles."""
    specs: dict[tuple, CompileSpec] = {}
    profiles = [p for p in known_profiles().values() if p.type in ("cuda", "npu")]
    for dtype, name in DTYPE_NAMES.items():
        for profile in profiles:
            for D, R in QWEN_DR:
                for T in QWEN_T:
                    for backward in (False, True):
                        launch = triton_plan.plan(profile, QWEN_B, T, D, R, dtype, backward)
                        s = spec(launch.tile["BT"], D, R, name, backward, note=f"{profile.spec} T={T} D={D} R={R}")
                        specs.setdefault((profile.type, s.key), s)
    return list(specs.values())
