"""Is flash-linear-attention usable here, for this device type? Importable is not usable.

fla imports on a CPU-only machine, and transformers 5.x then sends CPU tensors to its Triton kernels ("0 active
drivers"). Selection is by the tensors' device, and this probe adds what an import cannot tell: whether fla's
kernels can compile with the installed triton (triton 3.9 removed ``tl.make_block_ptr``), and whether fla's
Triton-Ascend backend is there for an NPU.
"""
from __future__ import annotations

import functools
import os

from dispatch import probe_package


@functools.lru_cache(maxsize=None)
def _uses_block_ptr(package_dir: str) -> tuple[str, ...]:
    """fla source files (outside its Triton-Ascend backends) that call ``tl.make_block_ptr``."""
    hits = []
    for root, _, files in os.walk(package_dir):
        if "triton_ascend" in root:
            continue
        for name in files:
            if name.endswith(".py") and "triton_ascend" not in name:
                path = os.path.join(root, name)
                with open(path, encoding="utf-8", errors="ignore") as f:
                    if "make_block_ptr" in f.read():
                        hits.append(os.path.relpath(path, package_dir))
    return tuple(sorted(hits))


@functools.lru_cache(maxsize=None)
def fla_usable(device_type: str) -> tuple[bool, str]:
    ok, version = probe_package("fla")
    if not ok:
        return False, version
    ok, triton_version = probe_package("triton")
    if not ok:
        return False, triton_version
    if device_type == "npu":
        from fla.backends import TritonAscendBackend

        if not TritonAscendBackend.is_available():
            return False, f"fla {version}: its Triton-Ascend backend is not available (triton-ascend not installed)"
        return True, ""
    import fla
    import triton.language as tl

    if not hasattr(tl, "make_block_ptr"):
        files = _uses_block_ptr(os.path.dirname(fla.__file__))
        if files:
            return False, (f"fla {version} uses tl.make_block_ptr ({files[0]}"
                           f"{f' and {len(files) - 1} more' if len(files) > 1 else ''}), "
                           f"which triton {triton_version} removed")
    return True, ""


def supports_fla(ctx) -> tuple[bool, str]:
    """A ``supports`` check for fla implementations."""
    return fla_usable(ctx.device.type)
