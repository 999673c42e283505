"""Every generate mode on a kernelized model equals transformers' own model on the same weights, token for token.

The tiny models put a linear-attention layer first, as every released Qwen3.5 / Qwen3-Next does (the cache's
length is read from layer 0).
"""
import copy
import dataclasses
import inspect
import re

import pytest
import torch

import sp_kernels
from tests.kernelize.models import build

FAMILIES = [("qwen3_5", torch.float64), ("qwen3_5_moe", torch.float32), ("qwen3_next", torch.float32)]
MODES = {
    "greedy": dict(do_sample=False),
    "sample": dict(do_sample=True, top_k=0),
    "sample_n2": dict(do_sample=True, num_return_sequences=2),
    "beam": dict(num_beams=3, do_sample=False),
    "beam_n2": dict(num_beams=3, num_return_sequences=2, do_sample=False),
    "static": dict(cache_implementation="static", do_sample=False),
    "static_sample": dict(cache_implementation="static", do_sample=True, top_k=0),
}
#: assisted decoding (candidates verified, the cache cropped back). The draft model is transformers' own (another
#: seed): only the target model is kernelized.
ASSISTED = {"prompt_lookup": dict(prompt_lookup_num_tokens=3, do_sample=False),
            "draft_model": dict(assistant_model="draft", do_sample=False)}
NEW = 6


def batch(kind: str, seed: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    B = 1 if kind.startswith("b1") else 3
    ids = torch.randint(1, 96, (B, 9), generator=gen)
    out = dict(input_ids=ids)
    if kind.endswith("left"):
        mask = torch.ones_like(ids)
        mask[-1, :4] = 0
        out["attention_mask"] = mask
    elif kind.endswith("right"):
        mask = torch.ones_like(ids)
        mask[-1, 6:] = 0
        out["attention_mask"] = mask
    return out


@pytest.fixture(scope="module", params=FAMILIES, ids=[f for f, _ in FAMILIES])
def models(request):
    family, dtype = request.param
    base = build(family, dtype, use_cache=True)
    base.family = family
    base.generation_config.pad_token_id = 0
    model = copy.deepcopy(base)
    sp_kernels.kernelize(model, mode="inference")
    assert model.config.layer_types[0] == "linear_attention"
    return base, model


def cache_keyword(model) -> str:
    """The cache keyword of this transformers' generate: ``cache`` from 5.25, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def generate(model, new: int = NEW, **kwargs):
    torch.manual_seed(0)
    with torch.no_grad():
        return model.generate(max_new_tokens=new, **kwargs)


@pytest.mark.parametrize("kind", ["b3", "b3left", "b1", "b1left", "b1right"])
@pytest.mark.parametrize("mode", list(MODES))
def test_generate_modes_equal_transformers(models, mode, kind):
    assert_same_generation(*models, MODES[mode], batch(kind))


@pytest.mark.parametrize("kind", ["b1", "b1left", "b1right"])  # transformers' assisted generation takes batch 1
@pytest.mark.parametrize("mode", list(ASSISTED))
def test_assisted_generation_equals_transformers(models, mode, kind):
    base, model = models
    kwargs = ASSISTED[mode]
    if kwargs.get("assistant_model") == "draft":
        kwargs = {**kwargs, "assistant_model": build(base.family, base.dtype, seed=3, use_cache=True)}
    assert_same_generation(base, model, kwargs, batch(kind))


def assert_same_generation(base, model, kwargs, inputs):
    try:
        theirs = generate(base, **inputs, **kwargs)
    except ValueError as exc:  # a mode this transformers refuses (assisted generation before 5.25): so must ours
        with pytest.raises(ValueError, match=f"^{re.escape(str(exc))}$"):
            generate(model, **inputs, **kwargs)
        return
    assert torch.equal(generate(model, **inputs, **kwargs), theirs)


def test_the_cache_after_generate_equals_transformers_and_continues(models):
    """After generate the cache's length and states are transformers'; generating on from it (a second turn reusing
    ``past_key_values``) equals generating all the tokens at once."""
    base, model = models
    inputs = batch("b3left")
    mask = torch.cat([inputs["attention_mask"], torch.ones(3, NEW, dtype=torch.long)], dim=1)
    out = {}
    for name, m in (("ours", model), ("theirs", base)):
        first = generate(m, **inputs, return_dict_in_generate=True)
        cache = first.past_key_values
        assert int(cache.get_seq_length()) == inputs["input_ids"].shape[1] + NEW - 1  # the last token is not fed
        more = generate(m, input_ids=first.sequences, attention_mask=mask, **{cache_keyword(m): cache})
        out[name] = (first.sequences, cache, more)
    (seq_a, cache_a, more_a), (seq_b, cache_b, more_b) = out["ours"], out["theirs"]
    assert torch.equal(seq_a, seq_b) and torch.equal(more_a, more_b)
    assert torch.equal(more_a, generate(model, 2 * NEW, **inputs))
    for i, kind in enumerate(model.config.layer_types):
        if kind == "linear_attention":
            a, b = cache_a.get_recurrent_state(i), cache_b.get_recurrent_state(i)
            torch.testing.assert_close(a, b.to(a.dtype), rtol=2e-3, atol=2e-3)
            torch.testing.assert_close(cache_a.get_conv_state(i), cache_b.get_conv_state(i), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("with_step", [True, False])
def test_a_decoded_token_runs_the_bound_implementations_decode_step_where_it_has_one(with_step):
    """A cached one-token step runs the bound delta rule's ``decode_step`` when it declares one, else the rule itself
    (the general path); both generate transformers' tokens."""
    from sp_kernels.dispatch import implementations, registered

    base = build("qwen3_5", torch.float64, use_cache=True)
    base.generation_config.pad_token_id = 0
    impl = implementations("chunk_gated_delta_rule")["torch_recurrent"]
    calls = []

    def counted(*args):
        calls.append(1)
        return impl.decode_step(*args)

    stand_in = dataclasses.replace(impl, decode_step=counted if with_step else None)
    with registered(stand_in):
        model = copy.deepcopy(base)
        sp_kernels.kernelize(model, mode="inference")
        inputs = batch("b3left")
        assert torch.equal(generate(model, **inputs), generate(base, **inputs))
    linear = model.config.layer_types.count("linear_attention")
    assert len(calls) == ((NEW - 1) * linear if with_step else 0)


def test_generate_from_inputs_embeds_continues_a_cache(models):
    base, model = models
    inputs = batch("b1")
    out = []
    for m in (model, base):
        embeds = m.get_input_embeddings()(inputs["input_ids"])
        first = generate(m, inputs_embeds=embeds, return_dict_in_generate=True)
        ids = torch.cat([inputs["input_ids"], first.sequences], dim=1)
        more = generate(m, input_ids=ids, **{cache_keyword(m): first.past_key_values})
        out.append((first.sequences, more))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])
    assert torch.equal(out[0][1], generate(model, 2 * NEW, **inputs))


@pytest.mark.parametrize("family,dtype", FAMILIES[:1])
def test_attention_weights_and_hidden_states_are_transformers(family, dtype):
    """``output_attentions``: the attention layers run transformers' attention for that call and return its
    weights (eager attention computes them; sdpa returns none, as transformers' does)."""
    for impl in ("eager", "sdpa"):
        base = build(family, dtype, use_cache=True, attn_implementation=impl)
        model = copy.deepcopy(base)
        sp_kernels.kernelize(model, mode="inference")
        ids = batch("b3left")
        with torch.no_grad():
            a = model(**ids, output_attentions=True, output_hidden_states=True)
            b = base(**ids, output_attentions=True, output_hidden_states=True)
        assert len(a.attentions) == len(b.attentions) == (2 if impl == "eager" else 0)
        for x, y in zip(a.attentions + a.hidden_states, b.attentions + b.hidden_states):
            torch.testing.assert_close(x, y, rtol=2e-3, atol=2e-3, equal_nan=True)  # rows of padding
        with torch.no_grad():
            out = generate(model, **ids, output_attentions=True, return_dict_in_generate=True, do_sample=False)
            ref = generate(base, **ids, output_attentions=True, return_dict_in_generate=True, do_sample=False)
        assert torch.equal(out.sequences, ref.sequences)
        assert [len(step) for step in out.attentions] == [len(step) for step in ref.attentions]


def test_compiled_static_cache_generation_is_one_graph_and_equals_transformers(models):
    """transformers compiles ``forward`` (fullgraph) for static-cache generation: what kernelize installs traces
    without a break or a data-dependent branch. Dynamo's ``eager`` backend: the capture is what is checked."""
    from transformers import CompileConfig

    base, model = models
    config = CompileConfig(fullgraph=True, dynamic=False, backend="eager", mode=None)
    config._compile_all_devices = True  # transformers compiles on accelerators only unless told
    inputs = batch("b3")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    ours = generate(model, **inputs, cache_implementation="static", compile_config=config, do_sample=False)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert torch.equal(ours, generate(base, **inputs, cache_implementation="static", do_sample=False))


def export_for_generation(model, inputs):
    from transformers.exporters.configs import DynamoConfig
    from transformers.exporters.exporter_dynamo import DynamoExporter

    return DynamoExporter().export_for_generation(model, inputs, DynamoConfig())


@pytest.mark.parametrize("family", ["qwen3_5", "qwen3_5_moe", "qwen3_next", "qwen3_5_vl", "qwen3_5_moe_vl"])
def test_prefill_and_decode_export_where_transformers_does(family):
    """torch.export of the generation steps (transformers' exporter): nothing kernelize installs branches on
    data or leaves in the recorded call arguments what the exporter cannot rebuild."""
    pytest.importorskip("transformers.exporters")
    from tests.kernelize.models import build_multimodal, image_sample

    if family.endswith("_vl"):
        base = build_multimodal(family[:-3], torch.float32)
        inputs = image_sample(3, 4, dtype=torch.float32)
    else:
        base = build(family, torch.float32, use_cache=True)
        inputs = batch("b1")
    base.config.use_cache = True
    model = copy.deepcopy(base)
    sp_kernels.kernelize(model, mode="inference")
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    try:
        theirs = export_for_generation(base, copy.deepcopy(inputs))
    except Exception as exc:  # noqa: BLE001 (transformers' own model does not export here: nor need ours)
        pytest.skip(f"transformers' own model does not export: {type(exc).__name__}")
    ours = export_for_generation(model, copy.deepcopy(inputs))
    components = lambda exported: list(getattr(exported, "components", exported))  # noqa: E731 (5.21: a dict)
    assert components(ours) == components(theirs)


@pytest.mark.parametrize("family", ["qwen3_5", "qwen3_5_moe"])
@pytest.mark.parametrize("mode", ["greedy", "beam", "static"])
def test_multimodal_generate_equals_transformers(family, mode):
    from tests.kernelize.models import build_multimodal, image_sample

    base = build_multimodal(family, torch.float32)
    base.config.use_cache = True
    model = copy.deepcopy(base)
    sp_kernels.kernelize(model, mode="inference")
    inputs = image_sample(3, 4, dtype=torch.float32)
    assert torch.equal(generate(model, **inputs, **MODES[mode]), generate(base, **inputs, **MODES[mode]))
