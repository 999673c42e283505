import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """Device-marked tests run only where the device is."""
    has_cuda = torch.cuda.is_available()
    try:
        import torch_npu  # noqa: F401

        has_npu = torch.npu.is_available()
    except Exception:
        has_npu = False
    for item in items:
        if "cuda" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
        if "npu" in item.keywords and not has_npu:
            item.add_marker(pytest.mark.skip(reason="needs an Ascend NPU with torch_npu"))


# transformers binds its GatedDeltaNet functions to flash-linear-attention at import time whenever `fla` imports,
# and fla's Triton kernels cannot run on CPU tensors: the unpatched model, which the kernelize parity tests use as
# their reference, would crash. This process therefore hides fla;
# tests/kernelize/test_transformers_compat.py::test_cpu_model_runs_after_kernelize_with_fla_installed checks the
# behaviour with fla visible, in a subprocess.
import sys  # noqa: E402

sys.modules.setdefault("fla", None)
