"""Test utilities shared across test packages."""
import contextlib

from dispatch import implementations, register, unregister


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
