"""A model that huggingface's ``kernels`` already kernelized: ours keeps the kernels of the submodules it calls and
refuses the layers whose forward (or conv / delta-rule function) it would replace.

The kernel mapping is a local stand-in (there is no network here): a "repository" whose ``load()`` returns a layer
class, which is all huggingface's ``kernelize`` asks of one.
"""
import inspect
import re

import pytest
import torch

import sp_kernels
from tests.kernelize.models import build

hf = pytest.importorskip("kernels")
if not hasattr(hf, "use_kernel_mapping"):
    pytest.skip("the importable `kernels` is not huggingface's", allow_module_level=True)
from transformers.models.qwen3_5 import modeling_qwen3_5 as qwen  # noqa: E402

if not hasattr(qwen.Qwen3_5GatedDeltaNet, "kernel_layer_name"):
    pytest.skip("this transformers does not mark Qwen3.5's layers for huggingface's kernelize", allow_module_level=True)

CALLS = []


class CountingNormGated(torch.nn.Module):
    """A stand-in hub kernel for ``RMSNormGated``: transformers' own computation, counted."""

    def forward(self, hidden_states, gate=None):
        CALLS.append(hidden_states.shape)
        return qwen.Qwen3_5RMSNormGated.forward(self, hidden_states, gate)


class PlainGatedDeltaNet(torch.nn.Module):
    """A stand-in hub kernel for the whole ``Qwen3_5GatedDeltaNet`` layer."""

    def forward(self, hidden_states, cache=None, attention_mask=None, **kwargs):
        return qwen.Qwen3_5GatedDeltaNet.forward(self, hidden_states, cache, attention_mask, **kwargs)


def plain_function(fn):
    """A stand-in hub kernel for a function of ``use_kernelized_func`` (huggingface's kernelize checks that its
    forward has the function's signature). Never called: kernelize refuses first."""
    def forward(self, *args, **kwargs):
        raise AssertionError("not called")

    sig = inspect.signature(type(fn).forward)
    forward.__signature__ = sig
    return type(f"Plain_{type(fn).kernel_layer_name}", (torch.nn.Module,), {"forward": forward})


class StandInRepository:
    def __init__(self, layer):
        self.layer = layer

    def load(self):
        return self.layer

    def __str__(self):
        return f"stand-in {self.layer.__name__}"


def hub_kernelize(model, layer_name: str, layer) -> None:
    with hf.use_kernel_mapping({layer_name: {"cpu": StandInRepository(layer)}}, inherit_mapping=False):
        hf.kernelize(model, mode=hf.Mode.TRAINING, device="cpu")


def test_the_gated_norm_keeps_its_hub_kernel_under_ours():
    hub_only, both = build("qwen3_5"), build("qwen3_5")
    for model in (hub_only, both):
        hub_kernelize(model, "RMSNormGated", CountingNormGated)
    report = sp_kernels.kernelize(both)
    assert {m.family for m in report.modules} == {"qwen3_5"} and len(report.modules) == 4
    ids = torch.randint(0, 96, (2, 11))
    CALLS.clear()
    ref = hub_only(input_ids=ids, labels=ids)
    assert len(CALLS) == 2  # the two GatedDeltaNet layers' norms
    ref.loss.backward()
    out = both(input_ids=ids, labels=ids)
    assert len(CALLS) == 4  # ours calls the norm module: its hub kernel runs
    out.loss.backward()
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-5, atol=1e-5)  # float32 norms in transformers
    for (name, p), q in zip(both.named_parameters(), hub_only.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("layer_name,layer,replaced", [
    ("Qwen3_5GatedDeltaNet", lambda: PlainGatedDeltaNet,
     "its forward (Qwen3_5GatedDeltaNet) by stand-in PlainGatedDeltaNet"),
    ("chunk_gated_delta_rule", lambda: plain_function(qwen.torch_chunk_gated_delta_rule),
     "chunk_gated_delta_rule by stand-in Plain_chunk_gated_delta_rule"),
    ("causal_conv1d_forward", lambda: plain_function(qwen.causal_conv1d_forward),
     "causal_conv1d_forward by stand-in Plain_causal_conv1d_forward"),
])
def test_a_layer_whose_forward_the_hub_replaced_is_refused_by_name(layer_name, layer, replaced):
    model = build("qwen3_5")
    hub_kernelize(model, layer_name, layer())
    with pytest.raises(ValueError, match="^" + re.escape(f"model: model.layers.0.linear_attn was kernelized by "
                                                         f"huggingface's `kernels` ({replaced}). ")):
        sp_kernels.kernelize(model)
    assert not any(hasattr(m, "_sp_kernels") for m in model.modules())  # refused before anything was patched


@pytest.mark.parametrize("layer_name,layer,replaced", [
    ("Qwen3_5GatedDeltaNet", lambda: PlainGatedDeltaNet,
     "its forward (Qwen3_5GatedDeltaNet) by stand-in PlainGatedDeltaNet"),
    # a mapping without the layer: huggingface's kernelize puts the layer's class forward back (removes ours)
    ("RMSNormGated", lambda: CountingNormGated, "its forward was removed: its class's would run"),
    ("chunk_gated_delta_rule", lambda: plain_function(qwen.torch_chunk_gated_delta_rule),
     "its forward was removed: its class's would run; chunk_gated_delta_rule by stand-in "
     "Plain_chunk_gated_delta_rule"),
])
def test_a_layer_the_hub_changed_after_ours_is_refused_before_the_model_runs(layer_name, layer, replaced):
    """huggingface's kernelize after ours replaces a layer's forward (or, mapping a class to itself, removes ours)
    or an attached function: the model's next forward raises, naming the layer, before any layer runs; after
    unkernelize the hub's kernelize is the model's own business again."""
    model = build("qwen3_5")
    sp_kernels.kernelize(model)
    hub_kernelize(model, layer_name, layer())
    ids = torch.randint(0, 96, (1, 7))
    with pytest.raises(RuntimeError, match="^" + re.escape(f"model: model.layers.0.linear_attn (Qwen3_5GatedDeltaNet) "
                                                           f"changed after sp_kernels.kernelize ({replaced})")):
        model(input_ids=ids)
    sp_kernels.unkernelize(model)
    if layer_name != "chunk_gated_delta_rule":  # (that stand-in is never meant to run)
        model(input_ids=ids)  # the hub's layer, or transformers' own, runs


def test_a_forward_the_user_wrapped_after_kernelize_is_theirs_and_runs():
    model = build("qwen3_5")
    sp_kernels.kernelize(model)
    layer = model.model.layers[0].linear_attn
    ours, calls = layer.forward, []

    def wrapped(*args, **kwargs):
        calls.append(1)
        return ours(*args, **kwargs)

    layer.forward = wrapped
    model(input_ids=torch.randint(0, 96, (1, 7)))
    assert calls == [1]
