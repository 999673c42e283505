"""Which Triton kernels the installed flash-linear-attention launches on an Ascend NPU, found by running it.

Runs in the triton-ascend interpreter (as :mod:`.ascend`, whose driver stubs it uses: triton-ascend's active
driver is the NPU, so fla imports with ``IS_NPU`` and dispatches to whatever its NPU path is), with a stand-in
``torch.npu`` and CPU tensors; every kernel launch (``JITFunction.run``, ``Autotuner.run``) is recorded — kernel,
block-size constexprs, autotune set — and not run. Each scenario is one process (fla reads
``FLA_DISABLE_BACKEND_DISPATCH`` at import)::

    PYTHONPATH=/work/main $SP_KERNELS_ASCEND_PYTHON -m sp_kernels.compile_check.fla_launches --out launches.json

Each record also holds what :func:`sp_kernels._fla.npu_paths` says, reading that fla's files;
``tests/compile_check/test_fla_npu_paths.py`` checks the statement against the launches recorded in
``sp_kernels/dispatch/data/fla_npu_launches.json`` (fla 0.5.2 and 0.6.0) and, where triton-ascend is available, against a
fresh run on the installed fla.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

#: (name, environment) of each scenario
SCENARIOS = (("default", {}), ("dispatch_disabled", {"FLA_DISABLE_BACKEND_DISPATCH": "1"}))
#: the shapes traced: Qwen3.5's conv at sp_size=4 (D = 10240 / 4) and its delta rule heads at sp_size=4
CONV = dict(B=1, T=4096, D=2560, W=4)
GDR = dict(B=1, T=256, H=4, HV=12, K=128, V=128)


def _stub_npu(arch: str) -> None:
    import torch

    from sp_kernels.compile_check.ascend import setup

    setup(arch)
    npu = types.ModuleType("torch.npu")
    npu.device = lambda index=None: contextlib.nullcontext()
    npu.current_device = lambda: 0
    npu.device_count = lambda: 1
    npu.is_available = lambda: True
    npu.get_device_name = lambda index=0: arch
    npu.synchronize = lambda *a, **k: None
    torch.npu = npu
    sys.modules["torch.npu"] = npu
    # torch.device("npu") parses and autocast knows the device (fla's custom_fwd / custom_bwd decorators)
    torch.utils.rename_privateuse1_backend("npu")
    npu.get_amp_supported_dtype = lambda: [torch.float16, torch.bfloat16]
    npu.is_autocast_enabled = lambda: False
    npu.set_autocast_enabled = lambda enabled: None
    npu.get_autocast_dtype = lambda: torch.float16
    npu.set_autocast_dtype = lambda dtype: None
    from triton.backends import backends
    from triton.backends.ascend import driver

    cores = {"num_aicore": 20, "num_vectorcore": 40} if "910B" in arch else {"num_aicore": 24, "num_vectorcore": 48}
    for cls in {driver.NPUUtils, backends["ascend"].driver.__init__.__globals__.get("NPUUtils", driver.NPUUtils)}:
        cls.get_device_properties = lambda self, index=0: dict(cores, max_shared_mem=0)


def _record(log: list) -> None:
    """Replace kernel launches with a record of them."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    def name(fn):
        while not isinstance(fn, JITFunction):
            fn = fn.fn
        return f"{fn.fn.__module__}.{fn.fn.__name__}"

    def blocks(fn, kw):
        while not isinstance(fn, JITFunction):
            fn = fn.fn
        const = {p.name for p in fn.params if p.is_constexpr}
        return {k: v for k, v in kw.items() if k in const and isinstance(v, int) and not isinstance(v, bool)
                and (k.startswith("B") or k in ("W", "TAIL_MODE"))}

    def jit_run(self, *args, grid=None, warmup=False, **kw):
        log.append({"kernel": name(self), "constexprs": blocks(self, kw)})

    def autotune_run(self, *args, **kw):
        log.append({"kernel": name(self), "constexprs": blocks(self, kw),
                    "autotune": [dict(t) for t in sorted({tuple(sorted(c.kwargs.items())) for c in self.configs})]})

    JITFunction.run = jit_run
    Autotuner.run = autotune_run
    return autotune_run


def trace(arch: str = "Ascend910B3") -> dict:
    """Run fla's causal conv and chunked gated delta rule (forward, backward; bf16 and fp32) and record launches."""
    _stub_npu(arch)
    log: list = []
    autotune_run = _record(log)
    import torch

    import fla

    for module in ("fla.ops.utils.cache",):  # fla's own Autotuner subclass overrides run
        with contextlib.suppress(ImportError):
            mod = __import__(module, fromlist=["CachedAutotuner"])
            if hasattr(mod, "CachedAutotuner"):
                mod.CachedAutotuner.run = autotune_run
    from sp_kernels._fla import npu_paths

    # what the probe says, reading this fla's files (the main venv's selection reads the same)
    paths = npu_paths(os.path.dirname(fla.__file__))
    out = {"fla": fla.__version__, "arch": arch, "calls": [],
           "probe": {"conv": paths.conv, "delta_rule": paths.delta_rule, "conv_module": paths.conv_module}}

    def call(op, dtype, phase, fn):
        log.clear()
        try:
            result = fn()
            error = ""
        except Exception as exc:  # what happens on the NPU path is the record: an error too
            result, error = None, f"{type(exc).__name__}: {exc}"[:300]
        out["calls"].append({"op": op, "dtype": str(dtype)[6:], "phase": phase, "launches": list(log),
                             "error": error})
        return result

    try:
        from fla.modules.causal_conv1d import causal_conv1d
    except ImportError:
        from fla.modules.convolution import causal_conv1d
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    for dtype in (torch.bfloat16, torch.float32):
        B, T, D, W = (CONV[k] for k in ("B", "T", "D", "W"))
        x = torch.randn(B, T, D, dtype=dtype, requires_grad=True)
        w = torch.randn(D, W, dtype=dtype, requires_grad=True)
        y = call("causal_conv1d", dtype, "forward", lambda: causal_conv1d(x, weight=w, activation="silu")[0])
        if y is not None:
            call("causal_conv1d", dtype, "backward", lambda: y.float().sum().backward())
        B, T, H, HV, K, V = (GDR[k] for k in ("B", "T", "H", "HV", "K", "V"))
        q, k = (torch.randn(B, T, HV, K, dtype=dtype, requires_grad=True) for _ in range(2))
        v = torch.randn(B, T, HV, V, dtype=dtype, requires_grad=True)
        g = (-torch.rand(B, T, HV, dtype=torch.float32)).requires_grad_()
        beta = torch.rand(B, T, HV, dtype=dtype).requires_grad_()
        o = call("chunk_gated_delta_rule", dtype, "forward",
                 lambda: chunk_gated_delta_rule(q=q, k=k, v=v, g=g, beta=beta, use_qk_l2norm_in_kernel=True)[0])
        if o is not None:
            call("chunk_gated_delta_rule", dtype, "backward", lambda: o.float().sum().backward())
    return out


def summary(calls: list[dict]) -> dict[str, list[str]]:
    """``{"causal_conv1d backward": [kernel function names, in launch order, without repeats], ...}`` across
    dtypes (what :data:`sp_kernels._fla.NPU_PATHS` states)."""
    out: dict[str, list[str]] = {}
    for c in calls:
        names = out.setdefault(f"{c['op']} {c['phase']}", [])
        for launch in c["launches"]:
            fn = launch["kernel"].rsplit(".", 1)[-1]
            if fn not in names:
                names.append(fn)
    return out


def run_all(python: str, arch: str = "Ascend910B3", fla_path: str | None = None) -> list[dict]:
    """Every scenario in a fresh ``python`` process (``fla_path`` first on its path: another fla version)."""
    root = str(Path(__file__).resolve().parents[2])
    results = []
    for scenario, extra in SCENARIOS:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLA_")}
        env.update(extra, PYTHONPATH=os.pathsep.join(p for p in (fla_path, root) if p))
        env.pop("TRITON_INTERPRET", None)
        run = subprocess.run([python, "-m", "sp_kernels.compile_check.fla_launches", "--worker", "--arch", arch],
                             capture_output=True, text=True, env=env, timeout=1800)
        lines = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
        if run.returncode != 0 or not lines:
            results.append({"scenario": scenario, "env": extra, "error": run.stderr[-1500:]})
            continue
        rec = json.loads(lines[-1])
        results.append({"scenario": scenario, "env": extra, **rec})
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sp_kernels.compile_check.fla_launches",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="Ascend910B3")
    parser.add_argument("--out", default=None, help="JSON file (default: print)")
    parser.add_argument("--fla-path", default=None, help="a directory holding another fla version's package")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(trace(args.arch)))
        return 0
    results = run_all(sys.executable, args.arch, args.fla_path)
    text = json.dumps(results, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    for r in results:
        print(r["scenario"], r.get("fla"), json.dumps(summary(r.get("calls", [])), indent=1) if "calls" in r
              else r["error"][-500:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
