"""Per-device kernel selection.

``dispatch`` knows nothing about the ops themselves: implementations register here (``sp_kernels.kernels`` does it
for its own), and :func:`select` picks one for a :class:`Context` — the device profile, dtype, shapes,
packing and sequence-parallel degree of one call — telling why every other candidate was rejected.
"""
from sp_kernels.dispatch import ub
from sp_kernels.dispatch.context import Context
from sp_kernels.dispatch.devices import DeviceProfile, detect, known_profiles, resolve_profile
from sp_kernels.dispatch.packages import probe_package
from sp_kernels.dispatch.registry import (
    ANY_DEVICE,
    FORCE_ENV,
    OPS,
    Implementation,
    Residuals,
    Selection,
    check_impl_name,
    declare,
    forced_from_env,
    implementations,
    prefer,
    preference,
    reference,
    register,
    registered,
    select,
    unregister,
)

__all__ = [
    "ANY_DEVICE",
    "Context",
    "DeviceProfile",
    "FORCE_ENV",
    "Implementation",
    "OPS",
    "Residuals",
    "Selection",
    "check_impl_name",
    "declare",
    "detect",
    "forced_from_env",
    "implementations",
    "known_profiles",
    "prefer",
    "preference",
    "probe_package",
    "reference",
    "register",
    "registered",
    "resolve_profile",
    "select",
    "ub",
    "unregister",
]
