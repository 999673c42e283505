import pytest

from bench.common import PROFILE, ceilings

_READINGS: list[dict] = []


@pytest.fixture(scope="session", autouse=True)
def machine_ceilings(request):
    """Measured at the start of the run and again when the results are saved; the best of both is stored with the
    results (``machine_info`` of the JSON)."""
    _READINGS.append(ceilings())
    return _READINGS[0]


def pytest_benchmark_update_machine_info(config, machine_info):
    _READINGS.append(ceilings())
    machine_info["sp_kernels_ceilings"] = {key: max(r[key] for r in _READINGS) for key in _READINGS[0]}
    machine_info["sp_kernels_device"] = PROFILE.describe()
    machine_info["sp_kernels_device_type"] = PROFILE.type
