"""Lazy, cached probes of optional packages: a missing package is a rejection reason, never a crash."""
from __future__ import annotations

import functools
import importlib
import warnings


@functools.lru_cache(maxsize=None)
def probe_package(module: str) -> tuple[bool, str]:
    """Import ``module`` once; return ``(True, version)`` or ``(False, why)``."""
    try:
        with warnings.catch_warnings():  # fla says so when it finds no GPU; availability is this probe's answer
            warnings.filterwarnings("ignore", message="Triton is not supported on current platform")
            mod = importlib.import_module(module)
    except Exception as exc:  # ImportError, but also broken installs raising anything at import
        return False, f"package {module!r} not usable: {type(exc).__name__}: {exc}".splitlines()[0]
    return True, str(getattr(mod, "__version__", "unknown version"))

