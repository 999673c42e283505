"""Is flash-linear-attention usable here, for this device type? Importable is not usable.

fla imports on a CPU-only machine, and transformers 5.x then sends CPU tensors to its Triton kernels ("0 active
drivers"). Selection is by the tensors' device, and this probe adds what an import cannot tell: whether fla's
kernels can compile with the installed triton (triton 3.9 removed ``tl.make_block_ptr``), and, for an NPU, which
kernels the installed fla would launch there (:func:`npu_paths`) and whether triton-ascend is there to run them.

What fla launches on an NPU was found by running each fla version of the declared range through triton-ascend's
stubbed driver (``sp_kernels/compile_check/fla_launches.py``; records in ``sp_kernels/dispatch/data/fla_npu_launches.json``):

* fla 0.6: its Triton-Ascend backend (``fla/modules/causal_conv1d/backends/triton_ascend.py``) — the core-grid conv
  kernels where the layout and channel width allow, else the legacy ``causal_conv1d_fwd_kernel`` /
  ``causal_conv1d_bwd_dx_kernel`` / ``causal_conv1d_bwd_dwdb_kernel`` of that file; the delta rule through its
  Triton-Ascend kernels (``chunk_gated_delta_rule_h_fwd_kernel``, ``chunk_o_fwd_kernel``, ...; a few generic ones,
  e.g. ``recompute_w_u_fwd_kernel``, in between).
* fla 0.5.2: the legacy Triton-Ascend conv kernels only (``fla/modules/backends/triton_ascend/causal_conv1d.py``: no
  core grid); the delta rule through ``fla/ops/gated_delta_rule/backends/triton_ascend``.
* either, with ``FLA_DISABLE_BACKEND_DISPATCH=1`` (or an fla without a Triton-Ascend conv backend): the generic,
  GPU-autotuned ``causal_conv1d_fwd_kernel`` / ``causal_conv1d_bwd_kernel`` of ``ops.py`` — whose backward overflows
  the Unified Buffer at every configuration of its autotune set (``fla.causal_conv1d_bwd_generic``) — and the
  generic delta-rule kernels (``chunk_gated_delta_rule_fwd_kernel_h_blockdim64``, ...).

fla 0.5.2 does not import with triton 3.9 (an autotune key error): that is a rejection reason, not a crash.
"""
from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import os
from dataclasses import dataclass

from sp_kernels.dispatch import probe_package

CORE_GRID, LEGACY, GENERIC = "core-grid", "legacy", "generic"
DISPATCH_ENV = "FLA_DISABLE_BACKEND_DISPATCH"


@functools.lru_cache(maxsize=None)
def _package_dir() -> str | None:
    """fla's package directory, without importing fla (which may not import here)."""
    try:  # the path finder, not find_spec: it works where fla is hidden from imports (the test process does)
        spec = importlib.machinery.PathFinder.find_spec("fla")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def _read(root: str, *parts: str) -> str:
    path = os.path.join(root, *parts)
    if not os.path.isfile(path):
        return ""
    with open(path, encoding="utf-8", errors="ignore") as f:
        return f.read()


@dataclass(frozen=True)
class NpuPaths:
    """Which of fla's kernels run on an NPU: ``conv`` one of :data:`CORE_GRID` (core-grid kernels where the layout
    allows, legacy otherwise), :data:`LEGACY`, :data:`GENERIC`; ``delta_rule`` ``"triton-ascend"`` or
    :data:`GENERIC`; ``conv_module`` the module fla's ``causal_conv1d`` is in."""

    conv: str
    delta_rule: str
    conv_module: str
    why: str

    def describe(self, op: str | None = None) -> str:
        """What fla runs on an NPU for ``op`` (``causal_conv1d``, ``chunk_gated_delta_rule``; else both)."""
        conv = {CORE_GRID: "its Triton-Ascend core-grid conv kernels (legacy tiling where the layout needs it)",
                LEGACY: "its legacy Triton-Ascend conv kernels (no core grid)",
                GENERIC: "its generic GPU-autotuned conv kernels"}[self.conv]
        if self.delta_rule != GENERIC:
            gdr = "its Triton-Ascend delta-rule kernels (fla/ops/gated_delta_rule/backends/triton_ascend)"
        else:
            gdr = "its generic delta-rule kernels (" + (
                self.why if self.why.startswith(DISPATCH_ENV) else "this fla has no Triton-Ascend delta-rule backend") + ")"
        if op == "causal_conv1d":
            return f"{conv} ({self.why})"
        if op == "chunk_gated_delta_rule":
            return gdr
        if op is None:
            return f"{conv} ({self.why}) and {gdr}"
        return "its Triton kernels"


def npu_paths(package_dir: str | None = None, env=None) -> NpuPaths:
    """What the fla in ``package_dir`` (default: the installed one) runs on an NPU, read from its files (no import)
    and ``env`` (default ``os.environ``): fla reads ``FLA_DISABLE_BACKEND_DISPATCH`` once, at import."""
    env = os.environ if env is None else env
    return _npu_paths(package_dir or _package_dir() or "", env.get(DISPATCH_ENV) == "1")


@functools.lru_cache(maxsize=None)
def _npu_paths(root: str, dispatch_disabled: bool) -> NpuPaths:
    new_conv = os.path.isfile(os.path.join(root, "modules", "causal_conv1d", "ops.py"))
    conv_module = "fla.modules.causal_conv1d" if new_conv else "fla.modules.conv"
    gdr = "triton-ascend" if os.path.isdir(os.path.join(root, "ops", "gated_delta_rule", "backends",
                                                        "triton_ascend")) else GENERIC
    if dispatch_disabled:
        return NpuPaths(GENERIC, GENERIC, conv_module, f"{DISPATCH_ENV}=1: fla dispatches to no backend")
    new = _read(root, "modules", "causal_conv1d", "backends", "triton_ascend.py")
    if "causal_conv1d_bwd_coregrid_kernel" in new:
        return NpuPaths(CORE_GRID, gdr, conv_module, "fla/modules/causal_conv1d/backends/triton_ascend.py")
    if new or os.path.isfile(os.path.join(root, "modules", "backends", "triton_ascend", "causal_conv1d.py")):
        where = ("fla/modules/causal_conv1d/backends/triton_ascend.py" if new
                 else "fla/modules/backends/triton_ascend/causal_conv1d.py")
        return NpuPaths(LEGACY, gdr, conv_module, where)
    return NpuPaths(GENERIC, gdr, conv_module, "this fla has no Triton-Ascend conv backend")


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


def _has_triton_ascend() -> bool:
    try:
        return importlib.util.find_spec("triton.backends.ascend") is not None
    except (ImportError, ValueError):
        return False


def fla_usable(device_type: str, op: str | None = None) -> tuple[bool, str]:
    """``(ok, reason)``: can fla run on ``device_type`` here (for ``op``, which the NPU reason names the kernels
    of)? Never raises: an fla that does not import is a reason."""
    return _fla_usable(device_type, op, os.environ.get(DISPATCH_ENV) == "1")


@functools.lru_cache(maxsize=None)
def _fla_usable(device_type: str, op: str | None, dispatch_disabled: bool) -> tuple[bool, str]:
    ok, version = probe_package("fla")
    if not ok:
        return False, version
    ok, triton_version = probe_package("triton")
    if not ok:
        return False, triton_version
    if device_type == "npu":
        if not _has_triton_ascend():
            paths = npu_paths(env={DISPATCH_ENV: "1"} if dispatch_disabled else {})
            return False, (f"fla {version} on an NPU would run {paths.describe(op)}; triton-ascend (which "
                           f"runs them) is not installed")
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
    return fla_usable(ctx.device.type, ctx.op)
