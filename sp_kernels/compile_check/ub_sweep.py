"""Compile a sweep of kernel configurations for the Ascend UB models and store the compiler's verdicts.

    python -m sp_kernels.compile_check.ub_sweep --specs sp_kernels.compile_check.fla_specs:generic_fit_specs --write
    python -m sp_kernels.compile_check.ub_sweep --specs sp_kernels.compile_check.fla_specs:generic_held_out_specs \\
        --held-out --write

``--specs MODULE:FUNCTION`` names a function returning :class:`CompileSpec` s. They compile in the triton-ascend
interpreter (``--ascend-python`` or ``$SP_KERNELS_ASCEND_PYTHON``, as ``compile-check``); ``--write`` stores the
records in ``sp_kernels/dispatch/data/ub_table.json`` (the verdicts a model is fitted to) or, with ``--held-out``, in
``sp_kernels/dispatch/data/ub_held_out.json`` (verdicts compiled after the fit to check it), replacing records of the same key.
Either way the registered models are compared with every verdict of the sweep: ``agree N/N``, and each disagreement
(exit 1 if any). ``--check`` compares the stored records of the sweep without compiling (no triton-ascend needed).
How the models were fitted: ``sp_kernels/dispatch/data/UB_MODELS.md``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "dispatch" / "data"
FITTED, HELD_OUT = DATA / "ub_table.json", DATA / "ub_held_out.json"


def load_specs(name: str) -> list:
    module, _, function = name.partition(":")
    if not function:
        raise ValueError(f"specs: expected MODULE:FUNCTION, got {name!r}")
    return list(getattr(importlib.import_module(module), function)())


def dump_records(records: list[dict]) -> str:
    """The table format: one record a line."""
    return "[\n" + ",\n".join(json.dumps(r, sort_keys=True) for r in records) + "\n]\n"


def store(records: list[dict], held_out: bool) -> Path:
    """Put ``records`` in the fitted or the held-out table (same key: replaced; a key lives in one table only)."""
    path, other = (HELD_OUT, FITTED) if held_out else (FITTED, HELD_OUT)
    keys = {r["key"] for r in records}
    clash = keys & {r["key"] for r in json.loads(other.read_text())}
    if clash:
        raise ValueError(f"specs: {len(clash)} of these keys are in {other.name} already, e.g. {sorted(clash)[0]}")
    kept = [r for r in json.loads(path.read_text()) if r["key"] not in keys]
    path.write_text(dump_records(kept + [dict(r, held_out=held_out) for r in records]))
    return path


def disagreements(records: list[dict]) -> list[str]:
    """The records whose compiler verdict the registered model does not reproduce."""
    import sp_kernels  # noqa: F401  (the owners register their models)
    from sp_kernels.dispatch import ub

    wrong = []
    for r in records:
        est = ub.estimate(r["kernel"], arch=r["arch"], dtype=r["dtype"], **r["tile"])
        model = "fits" if est.fits_double_buffered else "fits_single_buffered" if est.fits else "overflow"
        if r["status"] == "error" or model != r["status"]:
            wrong.append(f"{r['key']}: compiler {r['status']} {r.get('bits') or ''}, model {est}")
    return wrong


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sp_kernels.compile_check.ub_sweep",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--specs", required=True, help="MODULE:FUNCTION returning the CompileSpecs")
    parser.add_argument("--held-out", action="store_true", help="the verdicts check a fit (not fitted to)")
    parser.add_argument("--write", action="store_true", help="store the verdicts in sp_kernels/dispatch/data")
    parser.add_argument("--check", action="store_true", help="compare the stored verdicts only (no compiler)")
    parser.add_argument("--ascend-python", default=None)
    parser.add_argument("--arch", default="Ascend910B3")
    args = parser.parse_args(argv)
    specs = load_specs(args.specs)
    if args.check:
        stored = {r["key"]: r for p in (FITTED, HELD_OUT) for r in json.loads(p.read_text())}
        missing = [s.key for s in specs if s.key not in stored]
        if missing:
            print(f"error: {len(missing)} of the sweep's configurations are not stored, e.g. {missing[0]}",
                  file=sys.stderr)
            return 2
        records = [stored[s.key] for s in specs]
    else:
        python = args.ascend_python or os.environ.get("SP_KERNELS_ASCEND_PYTHON")
        if not python:
            print("error: --ascend-python or $SP_KERNELS_ASCEND_PYTHON must name an interpreter with "
                  "triton-ascend==3.2.0 and ascendnpu-ir==1.2.0", file=sys.stderr)
            return 2
        from sp_kernels.compile_check.run import run_ascend

        records = run_ascend(specs, python, args.arch)
        for r in records:
            if not r.get("message"):
                r.pop("message", None)
        if args.write:
            print(f"wrote {len(records)} records to {store(records, args.held_out)}")
    wrong = disagreements(records)
    print(f"agree {len(records) - len(wrong)}/{len(records)}")
    for line in wrong:
        print("  " + line)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
