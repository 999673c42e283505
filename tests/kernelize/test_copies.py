"""A kernelized model deep-copies (reference models, EMA) and round-trips through torch.save / torch.load."""
import copy
import io

import pytest
import torch

import sp_kernels
from tests.kernelize.models import build


def kernelized(family="qwen3_5"):
    model = build(family, torch.float64 if family == "qwen3_5" else torch.float32)  # (MoE experts: no float64)
    sp_kernels.kernelize(model)
    return model


def patched(model):
    return [m for m in model.modules() if hasattr(m, "_sp_kernels")]


def packed_batch():
    lengths = [5, 1, 9]
    return dict(input_ids=torch.randint(0, 96, (1, sum(lengths))),
                position_ids=torch.cat([torch.arange(n) for n in lengths])[None])


@pytest.mark.parametrize("family", ["qwen3_5", "qwen3_next"])
def test_deepcopy_is_kernelized_runs_the_same_and_owns_its_weights(family):
    model = kernelized(family)
    clone = copy.deepcopy(model)
    assert len(patched(clone)) == 4
    for m in patched(clone):  # the copy's forwards are bound to the copy's modules, not the original's
        assert m.forward.args[0] is m
    batch = packed_batch()
    torch.testing.assert_close(clone(**batch).logits, model(**batch).logits, rtol=0, atol=0)
    with torch.no_grad():
        clone.model.layers[0].linear_attn.out_proj.weight.add_(1.0)
    assert not torch.allclose(clone(**batch).logits, model(**batch).logits)
    assert sp_kernels.unkernelize(clone) == 4 and not patched(clone)
    assert len(patched(model)) == 4  # the original stays kernelized


def test_torch_save_and_load_round_trip():
    model = kernelized()
    batch = packed_batch()
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert len(patched(loaded)) == 4
    torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)
    assert sp_kernels.unkernelize(loaded) == 4


def test_a_copy_in_a_fresh_process_finds_the_implementations_by_name(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    torch.save(kernelized(), tmp_path / "model.pt")
    script = ("import sys; sys.modules.setdefault('fla', None)\n"
              "import torch\n"
              f"m = torch.load({str(tmp_path / 'model.pt')!r}, weights_only=False)\n"
              "print(sum(hasattr(x, '_sp_kernels') for x in m.modules()), m(input_ids=torch.ones(1, 5).long())"
              ".logits.shape)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[0] == "4"
