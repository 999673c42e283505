"""``python -m sp_kernels bench [--op NAME] [--quick] [--targets]``: run the microbenchmarks in ``bench/``
with pytest-benchmark, save the JSON in ``bench/results/``, and render its table and plot."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPS = ("chunk_gated_delta_rule", "causal_conv1d", "apply_rotary_pos_emb", "fusion_attention", "dispatch_overhead",
       "paired", "sp", "compile", "decode", "step")
# the cases behind docs/benchmarks.md's per-op table: fp32 forward+backward at T=2048 for every op, our delta
# rule and conv also at T=1024 and 8192 (scaling), transformers' delta rule at T=1024, the dispatch overhead and
# the paired ratios
TARGETS = ("fp32 and fwd+bwd and (T2048 or (torch and (T1024 or T8192)) or (transformers and T1024 and gated)) "
           "or overhead or paired")


def main(op: str | None = None, quick: bool = False, out: str | None = None, targets: bool = False) -> int:
    bench = ROOT / "bench"
    if not bench.is_dir():
        print("error: bench/ not found: run from a source checkout of sp-kernels", file=sys.stderr)
        return 2
    if op is not None and op not in OPS:
        print(f"error: op: expected one of {', '.join(OPS)}, got {op!r}", file=sys.stderr)
        return 2
    files = [str(bench / f"bench_{name}.py") for name in (OPS if op is None else (op,))]
    result = Path(out) if out else bench / "results" / ("quick.json" if quick else "latest.json")
    result.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SP_KERNELS_BENCH_QUICK": "1" if quick else "0", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pytest", *files, "--benchmark-only", f"--benchmark-json={result}", "-q",
           "-p", "no:cacheprovider", "-o", "python_files=bench_*.py", "--rootdir", str(ROOT)]
    if targets:
        cmd += ["-k", TARGETS]
    run = subprocess.run(cmd, cwd=ROOT, env=env)
    if run.returncode != 0:
        return run.returncode
    return subprocess.run([sys.executable, str(bench / "render.py"), str(result)], cwd=ROOT, env=env).returncode
