"""Per-device kernel selection.

``dispatch`` knows nothing about the ops themselves: implementations register here (``kernels`` does it
for its own), and :func:`select` picks one for a :class:`Context` — the device profile, dtype, shapes,
packing and sequence-parallel degree of one call — telling why every other candidate was rejected.
"""
from dispatch import ub
from dispatch.context import Context
from dispatch.devices import DeviceProfile, detect, known_profiles, resolve_profile
from dispatch.packages import foreign_kernels, probe_package, warn_if_foreign_kernels
from dispatch.registry import (
    FORCE_ENV,
    OPS,
    Implementation,
    Selection,
    check_impl_name,
    forced_from_env,
    implementations,
    prefer,
    preference,
    register,
    registered,
    select,
    unregister,
)

__all__ = [
    "Context",
    "DeviceProfile",
    "FORCE_ENV",
    "Implementation",
    "OPS",
    "Selection",
    "check_impl_name",
    "detect",
    "forced_from_env",
    "foreign_kernels",
    "implementations",
    "known_profiles",
    "prefer",
    "preference",
    "probe_package",
    "register",
    "registered",
    "resolve_profile",
    "select",
    "ub",
    "unregister",
]

warn_if_foreign_kernels()
