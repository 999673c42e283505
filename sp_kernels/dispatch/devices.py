"""Device profiles: what the selector needs to know about a CPU, a CUDA GPU or an Ascend NPU.

A profile is either *detected* from a real ``torch.device`` or *simulated* from a name such as
``"npu:Ascend910B3"`` or ``"cuda:sm90"`` (for ``explain`` and for tests on machines without the device).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

#: Ascend launch grids are capped at 65535 blocks per dimension.
NPU_MAX_GRID = 65535
#: CUDA grid.x limit.
CUDA_MAX_GRID = 2**31 - 1


@dataclass(frozen=True)
class DeviceProfile:
    """What an implementation may check before it is chosen.

    ``type`` is the torch device type ('cpu', 'cuda', 'npu'); ``name`` the model ('sm90', 'Ascend910B3').
    Memory sizes are in bytes. Fields that do not apply to a device type are ``None``.
    """

    type: str
    name: str
    simulated: bool = False
    capability: tuple[int, int] | None = None  # cuda
    shared_memory_bytes: int | None = None  # cuda: opt-in shared memory per block
    ub_bytes: int | None = None  # npu: Unified Buffer per vector core
    vector_cores: int | None = None  # npu: AIV cores (a persistent grid uses this many programs)
    cube_cores: int | None = None  # npu: AIC cores
    max_grid: int | None = None

    @property
    def spec(self) -> str:
        """The string :func:`resolve_profile` accepts for this profile."""
        return self.type if self.type == "cpu" else f"{self.type}:{self.name}"

    def replace(self, **changes) -> DeviceProfile:
        """A copy with some fields changed (e.g. a different UB budget in a test)."""
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        parts = [self.spec + (" (simulated)" if self.simulated else "")]
        if self.capability is not None:
            parts.append(f"capability {self.capability[0]}.{self.capability[1]}")
        if self.shared_memory_bytes is not None:
            parts.append(f"shared memory {self.shared_memory_bytes // 1024} KiB/block")
        if self.ub_bytes is not None:
            parts.append(f"UB {self.ub_bytes // 1024} KiB")
        if self.vector_cores is not None:
            parts.append(f"{self.vector_cores} vector cores")
        if self.max_grid is not None and self.type == "npu":
            parts.append(f"grid <= {self.max_grid}")
        return ", ".join(parts)


_KIB = 1024

# Published hardware figures. Ascend 910B: 192 KiB Unified Buffer per AI vector core.
_PROFILES: dict[str, DeviceProfile] = {
    p.spec: p
    for p in (
        DeviceProfile("cpu", "cpu"),
        DeviceProfile("cuda", "sm80", capability=(8, 0), shared_memory_bytes=163 * _KIB, max_grid=CUDA_MAX_GRID),
        DeviceProfile("cuda", "sm89", capability=(8, 9), shared_memory_bytes=99 * _KIB, max_grid=CUDA_MAX_GRID),
        DeviceProfile("cuda", "sm90", capability=(9, 0), shared_memory_bytes=227 * _KIB, max_grid=CUDA_MAX_GRID),
        DeviceProfile("npu", "Ascend910B1", ub_bytes=192 * _KIB, vector_cores=48, cube_cores=24, max_grid=NPU_MAX_GRID),
        DeviceProfile("npu", "Ascend910B2", ub_bytes=192 * _KIB, vector_cores=48, cube_cores=24, max_grid=NPU_MAX_GRID),
        DeviceProfile("npu", "Ascend910B3", ub_bytes=192 * _KIB, vector_cores=40, cube_cores=20, max_grid=NPU_MAX_GRID),
        DeviceProfile("npu", "Ascend910B4", ub_bytes=192 * _KIB, vector_cores=40, cube_cores=20, max_grid=NPU_MAX_GRID),
        DeviceProfile("npu", "Ascend910_9382", ub_bytes=192 * _KIB, vector_cores=48, cube_cores=24, max_grid=NPU_MAX_GRID),
        DeviceProfile("npu", "Ascend910_9392", ub_bytes=192 * _KIB, vector_cores=48, cube_cores=24, max_grid=NPU_MAX_GRID),
    )
}
_DEFAULT_MODEL = {"cuda": "sm90", "npu": "Ascend910B3"}


def known_profiles() -> dict[str, DeviceProfile]:
    """The simulated profiles by spec, e.g. ``{'npu:Ascend910B3': DeviceProfile(...), ...}``."""
    return {spec: p.replace(simulated=p.type != "cpu") for spec, p in _PROFILES.items()}


def resolve_profile(device: str | torch.device | DeviceProfile | None) -> DeviceProfile:
    """Turn what a user passes as ``device`` into a profile.

    - a :class:`DeviceProfile`: returned as is;
    - ``None``: the CPU;
    - a ``torch.device`` or a plain device string ('cpu', 'cuda', 'cuda:0', 'npu:1'): detected from the hardware;
    - a simulated spec: 'cuda:sm90', 'npu:Ascend910B3' (see :func:`known_profiles`).
    A bare type ('npu') is always detected, so asking for a device that is not here is an error, not a guess.
    """
    if isinstance(device, DeviceProfile):
        return device
    if device is None:
        return _PROFILES["cpu"]
    if isinstance(device, torch.device):
        return detect(device)
    if not isinstance(device, str):
        raise TypeError(f"device: expected a str, torch.device or DeviceProfile, got {type(device).__name__}")
    kind, _, model = device.partition(":")
    if kind not in ("cpu", "cuda", "npu"):
        raise ValueError(f"device: unknown device type {kind!r}; expected 'cpu', 'cuda' or 'npu'")
    if model and not model.isdigit():
        known = known_profiles()
        if device not in known:
            names = ", ".join(s for s in known if s.startswith(kind + ":"))
            raise ValueError(f"device: unknown {kind} profile {model!r}; known: {names}")
        return known[device]
    if kind == "npu":  # torch parses "npu" only once torch_npu is imported
        return _detect_npu(int(model or 0), device)
    return detect(torch.device(device))


def simulated(kind: str) -> DeviceProfile:
    """The default simulated profile of a device type ('cuda' -> sm90, 'npu' -> Ascend910B3)."""
    if kind == "cpu":
        return _PROFILES["cpu"]
    return known_profiles()[f"{kind}:{_DEFAULT_MODEL[kind]}"]


def detect(device: torch.device) -> DeviceProfile:
    """Profile of a real device. Raises ``RuntimeError`` when the device is not present here."""
    if device.type == "cpu":
        return _PROFILES["cpu"]
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device: {device} requested but no CUDA device is available; "
                "use a simulated profile such as 'cuda:sm90' to explain selections"
            )
        props = torch.cuda.get_device_properties(device.index or 0)
        smem = getattr(props, "shared_memory_per_block_optin", None)
        return DeviceProfile(
            "cuda",
            f"sm{props.major}{props.minor}",
            capability=(props.major, props.minor),
            shared_memory_bytes=int(smem) if smem else None,
            max_grid=CUDA_MAX_GRID,
        )
    if device.type == "npu":
        return _detect_npu(device.index or 0, str(device))
    raise ValueError(f"device: unsupported device type {device.type!r}")


def npu_profile_for(arch: str) -> DeviceProfile:
    """Profile for an Ascend SoC name as torch_npu reports it (pure: tested without an NPU)."""
    base = _PROFILES.get(f"npu:{arch}")
    if base is not None:
        return base
    if arch.startswith("Ascend910B") or arch.startswith("Ascend910_93"):
        # Same UB on every 910B/A3 part; core counts from the closest known part.
        return DeviceProfile("npu", arch, ub_bytes=192 * _KIB, vector_cores=40, cube_cores=20, max_grid=NPU_MAX_GRID)
    raise ValueError(f"device: unknown Ascend architecture {arch!r}")


def _detect_npu(index: int, device: str) -> DeviceProfile:
    try:
        import torch_npu  # noqa: F401
    except Exception as exc:
        raise RuntimeError(f"device: {device} requested but torch_npu is not importable ({exc}); use a simulated "
                           "profile such as 'npu:Ascend910B3' to explain selections") from exc
    if not torch.npu.is_available():  # pragma: no cover
        raise RuntimeError(f"device: {device} requested but no NPU is available")
    arch = torch.npu.get_device_name(index)  # pragma: no cover
    return npu_profile_for(arch)  # pragma: no cover
