"""Every implementation registered for a device, run on that device against the float64 references: the self-test's
runner (``sp_kernels/selftest.py``: its cases, tolerances, every output and gradient compared).

Skipped where the device is absent (tests/conftest.py): on this project's CPU CI these paths are verified only
through selection, argument translation and the Triton interpreter. Run them where a GPU or an NPU is.
"""
import json

import pytest
import torch

from sp_kernels import selftest


def run_device(device_type: str, tmp_path) -> None:
    report, lines = tmp_path / "selftest.json", []
    code = selftest.run(torch.device(device_type), json_path=str(report), out=lines.append)
    result = json.loads(report.read_text())
    assert code == 0, "\n".join(result["failures"] or lines)


@pytest.mark.cuda
def test_cuda_implementations_match_references(tmp_path):
    run_device("cuda", tmp_path)


@pytest.mark.npu
def test_npu_implementations_match_references(tmp_path):
    run_device("npu", tmp_path)
