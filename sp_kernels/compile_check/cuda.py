"""Compile :class:`CompileSpec` s for a CUDA target with the installed triton — no GPU needed.

``triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", 90, 32))`` produces PTX and a
cubin here; the shared memory comes from triton's metadata and registers / spills from ``cuobjdump`` (shipped
with triton) on the cubin.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass

from sp_kernels.compile_check.specs import CompileSpec, jit_function


@dataclass(frozen=True)
class CudaResult:
    key: str
    kernel: str
    target: str
    dtype: str
    tile: dict
    status: str  # "fits" | "overflow" (shared memory) | "error"
    shared_bytes: int | None = None
    shared_limit: int | None = None
    registers: int | None = None
    spill_bytes: int | None = None
    seconds: float = 0.0
    message: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def ast_source(spec: CompileSpec):
    from triton.compiler import ASTSource

    fn = jit_function(spec)
    signature, constexprs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in spec.constexprs:
            signature[name] = "constexpr"
            constexprs[(i,)] = spec.constexprs[name]
        elif name in spec.signature:
            signature[name] = spec.signature[name]
        else:
            raise ValueError(f"{spec.key}: argument {name!r} has neither a type nor a constexpr value")
    return ASTSource(fn, signature=signature, constexprs=constexprs)


def _resource_usage(cubin: bytes) -> tuple[int | None, int | None]:
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, timeout=60).stdout
    regs = re.search(r"REG:(\d+)", out)
    spill = re.search(r"STACK:(\d+)", out)
    return (int(regs.group(1)) if regs else None), (int(spill.group(1)) if spill else None)


def compile_spec(spec: CompileSpec, capability: int = 90, shared_limit: int = 227 * 1024,
                 num_warps: int = 4) -> CudaResult:
    import triton
    from triton.backends.compiler import GPUTarget

    base = dict(key=spec.key, kernel=spec.kernel, target=f"cuda:sm{capability}", dtype=spec.dtype,
                tile=dict(spec.tile), shared_limit=shared_limit)
    source = ast_source(spec)  # a malformed spec is a bug in the spec list: raise
    start = time.perf_counter()
    try:
        compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32),
                                  options={"num_warps": num_warps})
    except Exception as exc:  # a kernel that does not compile for this target is a result, not a crash
        message = f"{type(exc).__name__}: {exc}".strip().splitlines()
        return CudaResult(status="error", seconds=time.perf_counter() - start,
                          message=" | ".join(message[-3:])[:500], **base)
    shared = int(compiled.metadata.shared)
    regs, stack = _resource_usage(compiled.asm["cubin"])
    return CudaResult(status="fits" if shared <= shared_limit else "overflow", shared_bytes=shared, registers=regs,
                      spill_bytes=stack, seconds=time.perf_counter() - start, **base)
