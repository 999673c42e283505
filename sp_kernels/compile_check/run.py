"""``python -m sp_kernels compile-check``: compile every kernel configuration the dispatcher can choose.

CUDA (sm_90) compiles in this process with the installed triton. Ascend compiles in a separate interpreter that has
``triton-ascend`` + ``ascendnpu-ir`` (both packages install the module ``triton``, so they cannot share a venv):
``--ascend-python`` or ``$SP_KERNELS_ASCEND_PYTHON`` names it; ``sp_kernels.compile_check.ascend`` runs there.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from sp_kernels.compile_check.specs import CompileSpec

#: our Triton kernels: each module's ``compile_specs()`` lists the configurations its op's tile plan picks
OURS = (
    "sp_kernels.kernels.causal_conv1d.triton_specs",
    "sp_kernels.kernels.apply_rotary_pos_emb.triton_specs",
    "sp_kernels.kernels.chunk_gated_delta_rule.triton_specs",
)
TABLE = Path(__file__).resolve().parents[1] / "dispatch" / "data" / "compile_table.json"
#: shapes at which the fla launches the dispatcher would make are collected (Qwen3.5 conv widths, with SP)
FLA_SHAPES = [dict(B=1, T=T, D=D, W=4) for T in (4096, 65536) for D in (10240, 2560, 1280)]


def _ours(target: str) -> list[CompileSpec]:
    """Our kernels' chosen configurations for ``target`` ('cuda' or 'ascend'): the spec notes name the profile."""
    prefix = "cuda:" if target == "cuda" else "npu:"
    specs = []
    for name in OURS:
        specs += [s for s in importlib.import_module(name).compile_specs() if s.note.startswith(prefix)]
    return specs


def _fla_chosen() -> list[CompileSpec]:
    """The fla configurations the dispatcher's mirror of fla's Ascend tile choice launches (``ascend_launches``)."""
    import torch

    from sp_kernels.dispatch import Context, resolve_profile
    from sp_kernels.dispatch.ub import check_launches
    from sp_kernels.kernels.causal_conv1d.adapters.fla import ascend_launches
    from sp_kernels.compile_check import fla_specs

    builders = {"fla.causal_conv1d_fwd_coregrid": [fla_specs.fwd_coregrid],
                "fla.causal_conv1d_bwd_coregrid": [fla_specs.bwd_coregrid],
                "fla.causal_conv1d_fwd": [fla_specs.fwd_legacy],
                "fla.causal_conv1d_bwd": [fla_specs.bwd_dx, fla_specs.bwd_dwdb],
                "fla.causal_conv1d_fwd_generic": [fla_specs.fwd_generic],  # FLA_DISABLE_BACKEND_DISPATCH=1
                "fla.causal_conv1d_bwd_generic": [fla_specs.bwd_generic]}
    npu = resolve_profile("npu:Ascend910B3")
    specs = []
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float32, "fp32")):
        for shapes in FLA_SHAPES:
            launches = ascend_launches(Context("causal_conv1d", npu, dtype, shapes, requires_grad=True))
            if not check_launches(launches, npu, dtype)[0]:  # rejected (the generic backward overflows): not chosen
                continue
            for launch in launches:
                specs += [build(name, launch.tile["BT"], launch.tile["BD"]) for build in builders[launch.kernel]]
    return specs


def chosen_specs(target: str) -> list[CompileSpec]:
    """Every configuration the dispatcher can choose for ``target``: each must compile and fit."""
    specs = _ours(target) + (_fla_chosen() if target == "ascend" else [])
    return list({s.key: s for s in specs}.values())


def calibration_specs() -> list[CompileSpec]:
    """The fla grid measured for the UB models (configurations beyond what the dispatcher chooses, on purpose)."""
    from sp_kernels.compile_check import fla_specs

    return fla_specs.fla_conv_specs() + fla_specs.held_out_specs()


def subset(specs: list[CompileSpec]) -> list[CompileSpec]:
    """A bounded subset for CI: per kernel and dtype, the largest tile (the one closest to the limits)."""
    largest: dict[tuple, CompileSpec] = {}
    for spec in specs:
        key = (spec.kernel, spec.dtype)
        if key not in largest or _volume(spec.tile) > _volume(largest[key].tile):
            largest[key] = spec
    return list(largest.values())


def _volume(tile) -> int:
    v = 1
    for key in ("BT", "BD", "BK", "BV", "BR"):
        v *= tile.get(key, 1)
    return v


def run_cuda(specs, capability=90) -> list[dict]:
    from sp_kernels.compile_check.cuda import compile_spec

    return [compile_spec(spec, capability=capability).to_json() for spec in specs]


def run_ascend(specs, python: str, arch: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        spec_file, out_file = Path(tmp, "specs.json"), Path(tmp, "results.json")
        spec_file.write_text(json.dumps([s.to_json() for s in specs]))
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        env.pop("TRITON_INTERPRET", None)
        subprocess.run([python, "-m", "sp_kernels.compile_check.ascend", "--arch", arch, "--specs", str(spec_file),
                        "--out", str(out_file)], check=True, env=env, timeout=3600)
        return json.loads(out_file.read_text())


def render(results: list[dict]) -> str:
    header = ("kernel", "config", "dtype", "target", "result", "detail")
    rows = []
    for r in results:
        config = ",".join(f"{k}={v}" for k, v in sorted(r["tile"].items()))
        if r.get("target", "").startswith("cuda"):
            detail = (f"smem {r['shared_bytes']}/{r['shared_limit']} B, {r['registers']} regs, "
                      f"{r['spill_bytes']} B spill" if r["status"] != "error" else r.get("message", ""))
        else:
            bits = r.get("bits")
            detail = f"{bits} bits" if bits else r.get("message", "")
        rows.append((r["kernel"], config, r["dtype"], r.get("target") or r.get("arch"), r["status"], detail[:90]))
    widths = [max(len(str(x[i])) for x in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*map(str, row)) for row in [header, *rows])


def main(target: str = "all", full: bool = False, write: bool = False, ascend_python: str | None = None,
         arch: str = "Ascend910B3", calibration: bool = False) -> int:
    """Compile the chosen configurations (a bounded subset unless ``full``); fail on an error or on a chosen
    configuration that does not fit. ``calibration`` adds the fla measurement grid (overflows expected there)."""
    results, chosen_keys = [], set()
    for name in (("cuda", "ascend") if target == "all" else (target,)):
        chosen = chosen_specs(name)
        picked = chosen if full else subset(chosen)
        chosen_keys |= {s.key for s in picked}
        extra = calibration_specs() if (calibration and name == "ascend") else []
        print(f"{name}: {len(picked)} of {len(chosen)} chosen configurations"
              f"{' (representative subset)' if not full else ''}{f', {len(extra)} calibration' if extra else ''}")
        if name == "cuda":
            results += run_cuda(picked)
        else:
            python = ascend_python or os.environ.get("SP_KERNELS_ASCEND_PYTHON")
            if not python:
                print("error: --ascend-python or $SP_KERNELS_ASCEND_PYTHON must name an interpreter with "
                      "triton-ascend==3.2.0 and ascendnpu-ir==1.2.0", file=sys.stderr)
                return 2
            results += run_ascend(picked + extra, python, arch)
    print(render(results))
    if write:
        TABLE.parent.mkdir(parents=True, exist_ok=True)
        TABLE.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        print(f"wrote {TABLE}")
    failed = [r for r in results if r["status"] == "error" or (r["status"] == "overflow" and r["key"] in chosen_keys)]
    for r in failed:
        print(f"FAILED {r['key']} on {r.get('target') or r.get('arch')}: {r['status']} {r.get('message', '')}",
              file=sys.stderr)
    return 1 if failed else 0
