"""Compile specs of our Triton fused recurrent gated delta rule: the kernel's own arguments (read from the
``@triton.jit`` function), the launcher's constexprs, and the tiles :func:`.triton_plan.plan` picks (the calibration
grid of the UB models is :mod:`sp_kernels.compile_check.ours_specs`)."""
from __future__ import annotations

from sp_kernels.dispatch.devices import known_profiles
from sp_kernels._tiles import DTYPE_NAMES
from sp_kernels.compile_check.specs import CompileSpec, kernel_spec
from sp_kernels.kernels.chunk_gated_delta_rule import triton_kernels, triton_plan
from sp_kernels.kernels.chunk_gated_delta_rule.triton_launch import constexprs

#: the arguments that are not a pointer in the input dtype
TYPES = {"h0": "*fp32", "ht": "*fp32", "seq_bos": "*i32", "seq_len": "*i32", "scale": "fp32",
         **{n: "i32" for n in ("N", "H", "HV", "K", "V")}}

#: Qwen3.5 / Qwen3-Next linear attention: K = V = 128, value heads 32 or 64 over key heads 16 (and sp shards).
QWEN_KV = ((128, 128),)
QWEN_NHV = (1, 4, 8, 32, 64, 256, 2048)  # sequences x local value heads


def spec(BK: int, BV: int, dtype: str, note: str = "") -> CompileSpec:
    """With initial and final state and in-kernel l2norm: the variant the decode path runs."""
    tile = {"BK": BK, "BV": BV}
    return kernel_spec(triton_plan.KERNEL, triton_kernels.fused_recurrent_gdr_fwd_kernel, dtype,
                       constexprs(tile, has_h0=True, store_final=True, l2norm=True), tile, types=TYPES, note=note)


def compile_specs() -> list[CompileSpec]:
    """Every (tile, dtype) the plan picks for Qwen3.5 decode shapes on the known CUDA / NPU profiles."""
    specs: dict[tuple, CompileSpec] = {}
    profiles = [p for p in known_profiles().values() if p.type in ("cuda", "npu")]
    for dtype, name in DTYPE_NAMES.items():
        for profile in profiles:
            for K, V in QWEN_KV:
                for items in QWEN_NHV:
                    launch = triton_plan.plan(profile, items, 1, K, V, dtype)
                    s = spec(launch.tile["BK"], launch.tile["BV"], name,
                             note=f"{profile.spec} N*HV={items} K={K} V={V}")
                    specs.setdefault((profile.type, s.key), s)
    return list(specs.values())
