"""transformers keeps working with this package installed, and kernelize fixes the CPU + fla crash."""
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import sp_kernels
from tests.helpers import is_checkout_file
from tests.kernelize.models import build

ROOT = Path(__file__).resolve().parents[2]


def test_transformers_gets_huggingface_kernels_or_none_never_ours():
    spec = importlib.util.find_spec("kernels")
    assert spec is None or not is_checkout_file(spec.origin, ROOT)
    if spec is not None:  # transformers >= 5.25 requires huggingface's `kernels` and uses its classes
        import kernels
        from transformers.integrations import hub_kernels

        assert hub_kernels.LayerRepository is kernels.LayerRepository


def test_qwen3_5_builds_and_trains_with_the_package_imported():
    model = build("qwen3_5", torch.float32)
    ids = torch.randint(0, 96, (2, 9))
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(p.grad is not None for p in model.parameters() if p.requires_grad)


SCRIPT = textwrap.dedent("""
    import torch
    import sp_kernels
    from tests.kernelize.models import build
    model = build("qwen3_5")
    ids = torch.randint(0, 96, (1, 16))
    try:
        model(input_ids=ids)
        print("UNPATCHED_OK")
    except Exception as exc:
        print("UNPATCHED_FAILS", type(exc).__name__, str(exc).splitlines()[0])
    ref = build("qwen3_5")
    from sp_kernels.dispatch import OPS
    sp_kernels.kernelize(ref, force={op: "reference" for op in OPS})
    sp_kernels.kernelize(model)
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
    # transformers 5.21-5.24 send CPU tensors to fla's Triton kernels and fail ("0 active drivers"); from 5.25 they
    # choose fla by the inputs' device...
    import transformers
    from packaging.version import Version

    fixed = Version(transformers.__version__) >= Version("5.25")
    assert ("UNPATCHED_OK" if fixed else "UNPATCHED_FAILS") in run.stdout, run.stdout
    # ...and after kernelize the same model runs on CPU through the torch implementations either way.
    assert "KERNELIZED_OK" in run.stdout


def _with_forward(module, forward):
    """Give one module a transformers class whose forward has another signature (a newer transformers)."""
    module.__class__ = type(type(module).__name__, (type(module),), {"forward": forward,
                                                                    "__module__": type(module).__module__})


def test_a_forward_parameter_kernelize_does_not_know_is_refused():
    import transformers

    model = build("qwen3_5")
    gdn = model.model.layers[0].linear_attn

    def forward(self, hidden_states, cache=None, attention_mask=None, seq_idx=None, **kwargs):
        return super(type(self), self).forward(hidden_states, cache, attention_mask, **kwargs)

    _with_forward(gdn, forward)
    with pytest.raises(RuntimeError, match=rf"Qwen3_5GatedDeltaNet.forward \(transformers "
                                           rf"{transformers.__version__}\) has a parameter 'seq_idx'"):
        sp_kernels.kernelize(model)
    assert not any(hasattr(m, "_sp_kernels") for m in model.modules())  # refused before anything was patched


def test_a_reordered_forward_is_refused():
    model = build("qwen3_5")

    def forward(self, hidden_states, position_embeddings, cache=None, attention_mask=None, **kwargs):
        raise AssertionError("not called")

    _with_forward(model.model.layers[1].self_attn, forward)
    with pytest.raises(RuntimeError, match="Qwen3_5Attention.forward .* positional parameters in the order"):
        sp_kernels.kernelize(model)


@pytest.mark.parametrize("keyword", ["cache", "cache_params", "past_key_values"])
def test_the_owned_forwards_take_every_cache_keyword(keyword):
    from sp_kernels.kernelize.attention import attention_forward
    from sp_kernels.kernelize.compat import check_forward, the_cache
    from sp_kernels.kernelize.gated_deltanet import gated_deltanet_forward

    marker = object()
    assert the_cache(**{keyword: marker}) is marker
    with pytest.raises(ValueError, match="cache: given twice"):
        the_cache(cache=marker, **{"cache_params" if keyword != "cache_params" else "past_key_values": object()})
    # both owned forwards handle transformers' signature of either era (a forward with the older name)
    for ours in (gated_deltanet_forward, attention_forward):
        old = {"gated_deltanet_forward": "def forward(self, hidden_states, cache_params=None, attention_mask=None,"
                                         " **kwargs): pass",
               "attention_forward": "def forward(self, hidden_states, position_embeddings, attention_mask, "
                                    "past_key_values=None, **kwargs): pass"}[ours.__name__]
        scope = {}
        exec(old, scope)
        check_forward(type("Old", (), {"forward": scope["forward"]}), ours)


def test_the_sp_pre_hook_refuses_a_text_model_parameter_it_does_not_shard():
    from sp_kernels.kernelize.compat import check_forward
    from sp_kernels.kernelize.sequence_parallel import HANDLED

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                use_cache=None, token_type_ids=None, **kwargs):
        pass

    with pytest.raises(RuntimeError, match="'token_type_ids' that the sequence-parallel pre-hook does not handle"):
        check_forward(type("TextModel", (), {"forward": forward}), HANDLED, "the sequence-parallel pre-hook")
