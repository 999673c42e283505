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


#: the line that marks sp-kernels' own ``kernels/__init__.py`` (the alias of :mod:`sp_kernels`)
ALIAS_MARKER = "# sp-kernels alias:"


def foreign_kernels() -> str | None:
    """Where the import name ``kernels`` resolves when that is not sp-kernels' alias (huggingface's ``kernels``
    package, or anything else on the path first), else ``None``. Finds the module without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("kernels")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    origin = spec.origin or ", ".join(spec.submodule_search_locations or ()) or "a namespace package"
    try:
        with open(spec.origin, encoding="utf-8") as f:
            if ALIAS_MARKER in f.read():
                return None
    except (OSError, TypeError):
        pass
    return origin


def warn_if_foreign_kernels() -> None:
    """One warning, naming what ``import kernels`` finds and the name to use instead."""
    where = foreign_kernels()
    if where is not None:
        warnings.warn(
            f"the import name `kernels` is another package here ({where}; huggingface's `kernels` uses the same "
            "name), so `import kernels` does not give sp-kernels: use `import sp_kernels` (the same API) and "
            "`python -m sp_kernels` or `sp-kernels` for the command line",
            UserWarning, stacklevel=2)
