"""transformers keeps working with this package installed, and kernelize fixes the CPU + fla crash."""
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import kernels
from tests.kernelize.models import build

ROOT = Path(__file__).resolve().parents[2]


def test_transformers_does_not_mistake_us_for_huggingface_kernels():
    from transformers.integrations import hub_kernels
    from transformers.utils.import_utils import is_kernels_available

    assert importlib.util.find_spec("kernels").origin == kernels.__file__  # the import name is ours here...
    assert is_kernels_available() is False  # ...but transformers finds no compatible huggingface `kernels`
    with pytest.raises(RuntimeError, match="requires `kernels` to be installed"):
        hub_kernels.LayerRepository()  # transformers' stand-in, not huggingface's class


def test_qwen3_5_builds_and_trains_with_the_package_imported():
    model = build("qwen3_5", torch.float32)
    ids = torch.randint(0, 96, (2, 9))
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(p.grad is not None for p in model.parameters() if p.requires_grad)


SCRIPT = textwrap.dedent("""
    import torch
    import kernels
    from tests.kernelize.models import build
    model = build("qwen3_5")
    ids = torch.randint(0, 96, (1, 16))
    try:
        model(input_ids=ids)
        print("UNPATCHED_OK")
    except Exception as exc:
        print("UNPATCHED_FAILS", type(exc).__name__, str(exc).splitlines()[0])
    ref = build("qwen3_5")
    kernels.kernelize(ref, force={op: "reference" for op in
                                  ("causal_conv1d", "chunk_gated_delta_rule", "rotary", "fusion_attention")})
    kernels.kernelize(model)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    torch.testing.assert_close(out.logits, ref(input_ids=ids).logits, rtol=1e-10, atol=1e-10)
    print("KERNELIZED_OK")
""")


def test_cpu_model_runs_after_kernelize_with_fla_installed():
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton not installed (pip install '.[cuda]' installs fla and triton)")
    # this process hides fla (see tests/conftest.py): look for it, and run the model, in a fresh interpreter
    found = subprocess.run([sys.executable, "-c", "import fla.ops.gated_delta_rule"], capture_output=True, cwd=ROOT)
    if found.returncode != 0:
        pytest.skip("flash-linear-attention not importable")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    # transformers 5.x sends CPU tensors to fla's Triton kernels: it fails here ("0 active drivers")...
    assert "UNPATCHED_FAILS" in run.stdout, run.stdout
    # ...and after kernelize the same model runs on CPU through the torch implementations.
    assert "KERNELIZED_OK" in run.stdout
