"""Test utilities shared across test packages."""
import contextlib
from pathlib import Path
from unittest import mock

from sp_kernels.dispatch import implementations, register, unregister
from sp_kernels.kernelize.bindings import ModuleBinding


@contextlib.contextmanager
def only_portable():
    """Hide the implementations that cannot run CPU tensors (Triton, fla, device libraries) for a ``with`` block:
    tests that select on a simulated NPU / GPU profile and then run the model on CPU use it."""
    removed = [unregister(op, name) for op, table in implementations().items()
               for name, impl in table.items() if "cpu" not in impl.device_types]
    try:
        yield
    finally:
        for impl in removed:
            register(impl, replace=True)


@contextlib.contextmanager
def device_standins_on_cpu():
    """Let a model kernelized with NPU- or CUDA-only stand-ins (which run torch code) take CPU tensors, for the
    tests of what kernelize binds on a simulated device; outside such a block that is an error
    (``ModuleBinding.check_device``)."""
    with mock.patch.object(ModuleBinding, "check_device", lambda self, module, x: None):
        yield


def is_checkout_file(origin, root) -> bool:
    """A module file of this source checkout (not of an environment installed inside it, as CI's venvs are)."""
    path = Path(origin).resolve()
    return path.is_relative_to(root) and "site-packages" not in path.relative_to(root).parts
