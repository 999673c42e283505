"""``python -m kernels compile-check``: compile every kernel configuration the dispatcher can choose.

CUDA (sm_90) compiles in this process with the installed triton. Ascend compiles in a separate interpreter that has
``triton-ascend`` + ``ascendnpu-ir`` (both packages install the module ``triton``, so they cannot share a venv):
``--ascend-python`` or ``$SP_KERNELS_ASCEND_PYTHON`` names it; ``kernels.compile_check.ascend`` runs there.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from kernels.compile_check.specs import CompileSpec

#: modules with a ``compile_specs()`` function listing their kernels' configurations
SPEC_SOURCES = (
    "kernels.causal_conv1d.triton_impl",
    "kernels.rotary.triton_impl",
    "kernels.gated_delta_rule.fused_recurrent_triton",
    "kernels.compile_check.fla_specs",
)
TABLE = Path(__file__).resolve().parents[2] / "dispatch" / "data" / "compile_table.json"


def all_specs() -> list[CompileSpec]:
    specs: dict[str, CompileSpec] = {}
    for name in SPEC_SOURCES:
        module = importlib.import_module(name)
        source = getattr(module, "compile_specs", None) or getattr(module, "fla_conv_specs")
        for spec in source():
            specs.setdefault(spec.key, spec)
    return list(specs.values())


def subset(specs: list[CompileSpec], per_kernel: int = 2) -> list[CompileSpec]:
    """A representative bounded subset for CI: the first and the largest tile of each kernel and dtype."""
    groups: dict[tuple, list[CompileSpec]] = {}
    for spec in specs:
        groups.setdefault((spec.kernel, spec.dtype), []).append(spec)
    chosen = []
    for group in groups.values():
        by_size = sorted(group, key=lambda s: _volume(s.tile))
        picks = [by_size[0], by_size[-1]][:per_kernel]
        chosen += [s for i, s in enumerate(picks) if s not in picks[:i]]
    return chosen


def _volume(tile) -> int:
    v = 1
    for key in ("BT", "BD", "BK", "BV", "BR"):
        v *= tile.get(key, 1)
    return v


def run_cuda(specs, capability=90) -> list[dict]:
    from kernels.compile_check.cuda import compile_spec

    return [compile_spec(spec, capability=capability).to_json() for spec in specs]


def run_ascend(specs, python: str, arch: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        spec_file, out_file = Path(tmp, "specs.json"), Path(tmp, "results.json")
        spec_file.write_text(json.dumps([s.to_json() for s in specs]))
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        env.pop("TRITON_INTERPRET", None)
        subprocess.run([python, "-m", "kernels.compile_check.ascend", "--arch", arch, "--specs", str(spec_file),
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
         arch: str = "Ascend910B3") -> int:
    specs = all_specs()
    chosen = specs if full else subset(specs)
    print(f"{len(chosen)} of {len(specs)} configurations ({'full' if full else 'representative subset'})")
    results = []
    if target in ("cuda", "all"):
        results += run_cuda(chosen)
    if target in ("ascend", "all"):
        python = ascend_python or os.environ.get("SP_KERNELS_ASCEND_PYTHON")
        if not python:
            print("error: --ascend-python or $SP_KERNELS_ASCEND_PYTHON must name an interpreter with "
                  "triton-ascend==3.2.0 and ascendnpu-ir==1.2.0", file=sys.stderr)
            return 2
        results += run_ascend(chosen, python, arch)
    print(render(results))
    if write:
        TABLE.parent.mkdir(parents=True, exist_ok=True)
        TABLE.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        print(f"wrote {TABLE}")
    notes = {s.key: s.note for s in chosen}
    # calibration grids measure configurations on purpose beyond what the dispatcher chooses
    failed = [r for r in results if r["status"] == "error"
              or (r["status"] == "overflow" and "calibration" not in notes.get(r["key"], ""))]
    for r in failed:
        print(f"FAILED {r['key']} on {r.get('target') or r.get('arch')}: {r['status']}", file=sys.stderr)
    return 1 if failed else 0
