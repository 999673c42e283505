import pytest

from bench.common import PROFILE, ceilings


@pytest.fixture(scope="session", autouse=True)
def machine_ceilings(request):
    """Measured once per run and stored with the results (``machine_info`` of the JSON)."""
    return ceilings()


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["sp_kernels_ceilings"] = ceilings()
    machine_info["sp_kernels_device"] = PROFILE.describe()
