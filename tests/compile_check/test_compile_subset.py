"""The real compilers on a bounded subset of the configurations the dispatcher can choose (CI runs this).

CUDA sm_90 with the installed triton (no GPU needed); Ascend910B3 with triton-ascend + ascendnpu-ir in the
interpreter named by ``$SP_KERNELS_ASCEND_PYTHON`` (``.ci/run`` creates it; both packages install the module
``triton``, so they cannot share the test venv). ``python -m sp_kernels compile-check --full`` runs all of them.
"""
import importlib.util
import os

import pytest

from sp_kernels.compile_check.run import main

pytestmark = pytest.mark.compile


def test_cuda_sm90_subset_compiles_and_fits():
    if importlib.util.find_spec("triton") is None or importlib.util.find_spec("triton.backends.nvidia") is None:
        pytest.skip("triton with its NVIDIA backend is not installed")
    assert main("cuda") == 0


def test_ascend910b3_subset_compiles_and_fits():
    if not os.environ.get("SP_KERNELS_ASCEND_PYTHON"):
        pytest.skip("SP_KERNELS_ASCEND_PYTHON does not name a triton-ascend interpreter (.ci/run sets it)")
    assert main("ascend") == 0
