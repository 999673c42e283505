"""Compile :class:`CompileSpec` s for an Ascend NPU (910B / A3) offline with ``triton-ascend`` + ``ascendnpu-ir``.

Runs in an interpreter that has ``triton-ascend==3.2.0`` and ``ascendnpu-ir==1.2.0`` (their module ``triton``
clashes with upstream triton, so it is a separate venv)::

    PYTHONPATH=/work/main /work/venv-ascend/bin/python -m sp_kernels.compile_check.ascend \\
        --arch Ascend910B3 --specs specs.json --out results.json [--jobs 2] [--timeout 120] [--limit N]

No NPU and no CANN are needed: the driver's device probes are stubbed (``NPUDriver.is_active``,
``NPUUtils.__init__`` — it would build ``npu_utils.so`` against CANN — ``NPUUtils.get_arch`` and
``get_aicore_num``), and bishengir-compile (shipped in ``ascendnpuir/bin``) runs the whole pipeline up to UB
planning. Its last step calls ``hivmc`` (part of CANN, absent here), so a kernel whose tiles fit the Unified Buffer
ends with ``External hivmc run fails``; one that does not ends with ``ub overflow, requires N bits while M bits
available!``. :func:`classify` reads that output (it is pure: the tests run it in the main venv).

Each spec compiles in a worker process (``--jobs`` of them) under a per-compile time limit; a worker that dies is
replaced and the spec it was on recorded as an ``error``.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRITON_ASCEND = "3.2.0"
ASCENDNPU_IR = "1.2.0"
ARCHS = ("Ascend910B3", "Ascend910_9382")

FITS, FITS_SINGLE, OVERFLOW, ERROR = "fits", "fits_single_buffered", "overflow", "error"

_OVERFLOW = re.compile(r"ub overflow, requires (\d+) bits while (\d+) bits available")
_HIVMC_RUN = "External hivmc run fails"
_SUCCEEDED = re.compile(r"\[NOTE\] Due to Ub overflow, (.*?); compilation then succeeded")
_NOISE = re.compile(r"Cannot find hivmc|Failed to run `hivmc --version`|Failed to detect hivmc version|"
                    r"The compiled kernel cache is in|\[ERROR\]\[Triton\]|ConvertLinalgRToBinary|^\s*$")


def classify(output: str) -> tuple[str, int | None]:
    """``(status, bits)`` from bishengir's output (the text of triton-ascend's compile error, or ``""`` when the
    compile went through — possible only where hivmc is installed).

    * ``overflow``: ``ub overflow, requires N bits`` — N (the single-buffered need, after bishengir's retries
      without code motion and multi-buffering) is returned as ``bits``;
    * ``fits_single_buffered``: ``[NOTE] ... set enable-auto-multi-buffer to false; compilation then succeeded``
      and then the hivmc step;
    * ``fits``: reached the hivmc step (``External hivmc run fails``) with no such note — a retry that only turned
      off code motion still counts as ``fits``;
    * ``error``: anything else. "Cannot find hivmc" alone (a version probe every run prints) means nothing.
    """
    m = _OVERFLOW.search(output)
    if m:
        return OVERFLOW, int(m.group(1))
    note = _SUCCEEDED.search(output)
    single = bool(note and "enable-auto-multi-buffer to false" in note.group(1))
    if _HIVMC_RUN in output or not output.strip():
        return (FITS_SINGLE if single else FITS), None
    return ERROR, None


def error_message(output: str, limit: int = 500) -> str:
    """The informative lines of a failed compile's output."""
    lines = [ln.strip() for ln in output.splitlines() if not _NOISE.search(ln)]
    return " | ".join(lines)[-limit:]


# --- the compile environment (only inside the triton-ascend venv) ---

_SETUP: dict = {}


def setup(arch: str) -> None:
    """Put bishengir-compile on PATH and stub the driver's device probes so ``triton.compile`` works without an NPU."""
    if _SETUP.get("arch") == arch:
        return
    spec = importlib.util.find_spec("ascendnpuir")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("ascendnpu-ir is not installed in this interpreter")
    bindir = os.path.join(spec.submodule_search_locations[0], "bin")
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("TRITON_ALWAYS_COMPILE", "1")  # never report a cached result
    os.environ.pop("TRITON_INTERPRET", None)

    from triton.backends import backends
    from triton.backends.ascend import driver as npu_driver

    def _init(self):
        self.npu_utils_mod = None

    # triton loads the backend's driver.py a second time under another module name: stub both copies.
    drivers = {npu_driver.NPUDriver, backends["ascend"].driver}
    utils = {npu_driver.NPUUtils} | {cls.__init__.__globals__["NPUUtils"] for cls in drivers}
    for cls in drivers:
        cls.is_active = classmethod(lambda cls: True)
    for cls in utils:
        cls.__init__ = _init
        cls.get_arch = lambda self: _SETUP["arch"]
        cls.get_aicore_num = lambda self: 20 if "910B" in _SETUP["arch"] else 24
    _SETUP["arch"] = arch


def _module_file(module: str) -> Path:
    """The source file of ``module`` without importing it (nor its parent packages)."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None:
        raise ModuleNotFoundError(module)
    base = Path(spec.submodule_search_locations[0]) if spec.submodule_search_locations else Path(spec.origin).parent
    path = base.joinpath(*rest)
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"


_HEADER = '''import triton
import triton.language as tl
try:  # as the kernel module does: triton-ascend's slice ops
    from triton.language.extra.cann.extension import extract_slice, insert_slice
    if not hasattr(tl, "extract_slice"):
        tl.extract_slice = extract_slice
    if not hasattr(tl, "insert_slice"):
        tl.insert_slice = insert_slice
except ImportError:
    pass
'''


def _jit_only_module(module: str):
    """``module``'s ``@triton.jit`` functions alone, in a generated module (the only decorator kept is the jit).

    For kernel modules whose package cannot be imported here (flash-linear-attention's package import probes
    ``torch.npu``); the spec gives every constexpr the ``triton.heuristics`` wrappers would have derived.
    """
    path = _module_file(module)
    source = path.read_text()
    tree = ast.parse(source)
    parts = [_HEADER]
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            jit = [d for d in node.decorator_list if "jit" in ast.unparse(d)]
            if jit:
                node.decorator_list = jit
                parts.append(ast.unparse(node))
    digest = hashlib.sha1(source.encode()).hexdigest()[:12]
    name = f"_jit_{module.replace('.', '_')}_{digest}"
    out = Path(tempfile.gettempdir(), "sp_kernels_ascend_jit", name + ".py")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.is_file():
        out.write_text("\n\n\n".join(parts) + "\n")
    if str(out.parent) not in sys.path:
        sys.path.insert(0, str(out.parent))
    return importlib.import_module(name)


def _load(module: str):
    """``module``, or its ``@triton.jit`` functions alone where its package does not import here."""
    try:
        return importlib.import_module(module)
    except Exception:
        return _jit_only_module(module)


def ast_source(spec):
    """triton 3.2's ``ASTSource(fn, signature, constants)``: as a launch builds it. A non-constexpr argument with a
    value in ``spec.constexprs`` (``None`` pointers, strides of 1) is a specialised constant, typed ``*i8`` if None."""
    from triton.compiler import ASTSource

    from sp_kernels.compile_check.specs import jit_function

    fn = jit_function(spec, load=_load)
    signature, constants = {}, {}
    for p in fn.params:
        name = p.name
        if p.is_constexpr:
            if name not in spec.constexprs:
                raise ValueError(f"{spec.key}: constexpr {name!r} has no value")
            constants[name] = spec.constexprs[name]
        elif name in spec.constexprs:
            value = spec.constexprs[name]
            constants[name] = value
            signature[name] = spec.signature.get(name) or ("*i8" if value is None else "i32")
        elif name in spec.signature:
            signature[name] = spec.signature[name]
        else:
            raise ValueError(f"{spec.key}: argument {name!r} has neither a type nor a constexpr value")
    return ASTSource(fn, signature, constants)


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def compile_spec(spec, arch: str = "Ascend910B3", timeout: float = 120.0) -> dict:
    """Compile one spec for ``arch``; the record of :data:`sp_kernels/dispatch/data/ub_table.json`."""
    import triton
    from triton.backends.compiler import GPUTarget

    setup(arch)
    record = dict(key=spec.key, kernel=spec.kernel, arch=arch, dtype=spec.dtype, tile=dict(spec.tile),
                  triton_ascend=TRITON_ASCEND, ascendnpu_ir=ASCENDNPU_IR)
    start = time.perf_counter()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    output, failed = "", None
    try:
        triton.compile(ast_source(spec), target=GPUTarget("npu", arch, 0))
    except _Timeout:
        failed = f"timeout after {timeout:g} s"
    except Exception as exc:  # bishengir's verdict comes back as the exception's text
        output = str(exc)
        for attr in ("stdout", "stderr"):  # subprocess.CalledProcessError
            extra = getattr(exc, attr, None)
            if extra:
                output += "\n" + (extra.decode(errors="replace") if isinstance(extra, bytes) else str(extra))
        failed = output or type(exc).__name__
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    seconds = round(time.perf_counter() - start, 3)
    if failed is not None and not output:
        status, bits = ERROR, None
    else:
        status, bits = classify(output)
    record.update(status=status, bits=bits, seconds=seconds,
                  message="" if status != ERROR else (error_message(output) or str(failed))[:500])
    return record


# --- running many specs ---

def _worker(spec_file: str, out_file: str, timeout: float) -> int:
    """Compile the ``[{"arch": ..., "spec": ...}]`` of ``spec_file`` in turn, appending one JSON line per result
    (after a ``_start`` line, so the parent can tell which spec a crash happened on)."""
    from sp_kernels.compile_check.specs import CompileSpec

    jobs = json.loads(Path(spec_file).read_text())
    with open(out_file, "a") as out:
        for job in jobs:
            spec = CompileSpec.from_json(job["spec"])
            out.write(json.dumps({"_start": spec.key, "arch": job["arch"]}) + "\n")
            out.flush()
            out.write(json.dumps(compile_spec(spec, job["arch"], timeout)) + "\n")
            out.flush()
    return 0


def run(specs, archs=ARCHS[:1], jobs: int = 2, timeout: float = 120.0, progress=None) -> list[dict]:
    """Compile every spec for every arch in ``jobs`` worker processes; one record per (spec, arch), in order."""
    archs = list(archs)
    todo = [(arch, spec) for arch in archs for spec in specs]
    done: dict[tuple[str, str], dict] = {}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")) if p)}
    with tempfile.TemporaryDirectory() as tmp:
        while True:
            pending = [(a, s) for a, s in todo if (a, s.key) not in done]
            if not pending:
                break
            chunks = [pending[i::jobs] for i in range(jobs) if pending[i::jobs]]
            procs = []
            for i, chunk in enumerate(chunks):
                sf, of, ef = (Path(tmp, f"{n}{len(done)}_{i}.{x}")
                              for n, x in (("s", "json"), ("o", "jsonl"), ("e", "txt")))
                sf.write_text(json.dumps([{"arch": a, "spec": s.to_json()} for a, s in chunk]))
                with open(ef, "wb") as err_file:
                    proc = subprocess.Popen([sys.executable, "-m", "sp_kernels.compile_check.ascend", "--worker", str(sf),
                                             "--out", str(of), "--timeout", str(timeout)], env=env,
                                            stdout=subprocess.DEVNULL, stderr=err_file)
                procs.append((proc, of, ef, chunk))
            for proc, of, ef, chunk in procs:
                proc.wait()
                err = ef.read_bytes()
                started, finished = None, 0
                for line in (of.read_text().splitlines() if of.is_file() else []):
                    rec = json.loads(line)
                    if "_start" in rec:
                        started = (rec["_start"], rec["arch"])
                        continue
                    done[(rec["arch"], rec["key"])] = rec
                    started, finished = None, finished + 1
                    if progress:
                        progress(rec)
                reason = f"exit {proc.returncode}: {err.decode(errors='replace')[-300:]}"
                if started is not None:  # the worker died on this spec: record it; the rest of its chunk runs again
                    culprits = [(a, s) for a, s in chunk if s.key == started[0] and a == started[1]]
                elif proc.returncode != 0 and not finished:  # died before any spec (e.g. an import error)
                    culprits = [(a, s) for a, s in chunk if (a, s.key) not in done]
                else:
                    culprits = []
                for a, s in culprits:
                    done[(a, s.key)] = dict(key=s.key, kernel=s.kernel, arch=a, dtype=s.dtype, tile=dict(s.tile),
                                            triton_ascend=TRITON_ASCEND, ascendnpu_ir=ASCENDNPU_IR, status=ERROR,
                                            bits=None, seconds=None, message=f"worker died ({reason})")
    return [done[(a, s.key)] for a, s in todo]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sp_kernels.compile_check.ascend", description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default=ARCHS[0], help=f"comma-separated, e.g. {','.join(ARCHS)}")
    parser.add_argument("--specs", help="JSON list of CompileSpec.to_json(); default: fla_conv_specs()")
    parser.add_argument("--out", required=True)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per compile")
    parser.add_argument("--limit", type=int, default=None, help="only the first N specs (a bounded CI subset)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    archs = [a for a in args.arch.split(",") if a]
    if args.worker:
        return _worker(args.worker, args.out, args.timeout)

    from sp_kernels.compile_check.specs import CompileSpec

    if args.specs:
        specs = [CompileSpec.from_json(d) for d in json.loads(Path(args.specs).read_text())]
    else:
        from sp_kernels.compile_check.fla_specs import fla_conv_specs
        specs = fla_conv_specs()
    if args.limit is not None:
        specs = specs[:args.limit]
    start = time.perf_counter()
    results = run(specs, archs, jobs=args.jobs, timeout=args.timeout,
                  progress=lambda r: print(f"{r['arch']:<15} {r['key']:<60} {r['status']:<21} "
                                           f"{r['bits'] or '':>8} {r['seconds']}s", flush=True))
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    counts: dict[str, int] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print(f"{len(results)} compiles in {time.perf_counter() - start:.0f} s: "
          + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
