"""kernelize parity: the patched model equals transformers' own torch path (logits, loss, every gradient)."""
import copy
import inspect

import pytest
import torch

import sp_kernels
from sp_kernels.dispatch import OPS
from tests.kernelize.models import build

FAMILIES = [("qwen3_5", torch.float64, 1e-10), ("qwen3_5_moe", torch.float32, 2e-4), ("qwen3_next", torch.float32, 2e-4)]
# transformers' torch_chunk_gated_delta_rule computes in float32 whatever the input dtype, so against the unpatched
# model even a float64 model agrees only to float32 accuracy; against our float64 references it must agree tightly.
TRANSFORMERS_TOL = 2e-3
REFERENCE = {op: "reference" for op in OPS}


def run(model, **batch):
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    return out.logits.detach(), out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_same(a, b, tol):
    (la, lossa, ga), (lb, lossb, gb) = a, b
    torch.testing.assert_close(la, lb, rtol=tol, atol=tol)
    torch.testing.assert_close(lossa, lossb, rtol=tol, atol=tol)
    assert ga.keys() == gb.keys()
    for name in ga:
        # transformers' RMSNorm computes in float32 whatever the model dtype: input gradients that differ in the
        # last float64 bits flip float32 roundings of the norm weights' gradients (relative 1e-7)
        t = max(tol, 1e-6) if "norm" in name else tol
        torch.testing.assert_close(ga[name], gb[name], rtol=t, atol=t * gb[name].abs().max().item() + tol,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("family,dtype,tol", FAMILIES)
def test_ordinary_batch_matches_transformers(family, dtype, tol):
    base = build(family, dtype)
    model = copy.deepcopy(base)
    report = sp_kernels.kernelize(model)
    assert len(report.modules) == 4
    reference = copy.deepcopy(base)
    sp_kernels.kernelize(reference, force=REFERENCE)
    ids = torch.randint(0, 96, (2, 45))  # 45: not a multiple of the 64-token chunk
    ours = run(model, input_ids=ids, labels=ids)
    assert_same(ours, run(reference, input_ids=ids, labels=ids), tol)
    assert_same(ours, run(base, input_ids=ids, labels=ids), max(tol, TRANSFORMERS_TOL))


@pytest.mark.parametrize("family,dtype,tol", FAMILIES)
def test_padded_batch_matches_transformers(family, dtype, tol):
    base = build(family, dtype)
    model = copy.deepcopy(base)
    sp_kernels.kernelize(model)
    ids = torch.randint(0, 96, (2, 21))
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0  # right padding in the second row
    labels = ids.masked_fill(mask == 0, -100)
    batch = dict(input_ids=ids, attention_mask=mask, labels=labels)
    (la, lossa, ga), (lb, lossb, gb) = run(model, **batch), run(base, **batch)
    tol = max(tol, TRANSFORMERS_TOL)
    keep = mask.bool()
    torch.testing.assert_close(la[keep], lb[keep], rtol=tol, atol=tol)
    torch.testing.assert_close(lossa, lossb, rtol=tol, atol=tol)
    for name in ga:
        # transformers' RMSNorm computes in float32 whatever the model dtype: input gradients that differ in the
        # last float64 bits flip float32 roundings of the norm weights' gradients (relative 1e-7)
        t = max(tol, 1e-6) if "norm" in name else tol
        torch.testing.assert_close(ga[name], gb[name], rtol=t, atol=t * gb[name].abs().max().item() + tol,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("family,dtype,tol", FAMILIES)
def test_packed_batch_equals_each_sequence_alone(family, dtype, tol):
    model = build(family, dtype)
    sp_kernels.kernelize(model)
    lengths = [9, 1, 70, 4]  # one sequence longer than a chunk, one of a single token
    seqs = [torch.randint(0, 96, (1, n)) for n in lengths]
    ids = torch.cat(seqs, dim=1)
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]

    model.zero_grad(set_to_none=True)
    packed = model(input_ids=ids, position_ids=position_ids).logits
    packed.pow(2).mean(-1).sum().backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad(set_to_none=True)
    alone = [model(input_ids=s).logits for s in seqs]
    sum(a.pow(2).mean(-1).sum() for a in alone).backward()
    torch.testing.assert_close(packed, torch.cat(alone, dim=1), rtol=tol, atol=tol)
    # transformers' RMSNorm and the A_log cast run in float32 even in a float64 model: gradients summed over
    # tokens in a different order (one packed batch vs four) agree to float32 accuracy there.
    grad_tol = max(tol, 2e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(packed_grads[name], p.grad, rtol=grad_tol, atol=grad_tol, msg=name)


def test_packed_batch_is_refused_by_transformers_but_not_after_kernelize():
    model = build("qwen3_5")
    lengths = [5, 7]
    ids = torch.randint(0, 96, (1, 12))
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    with pytest.raises(ValueError, match="packed sequences"):
        model(input_ids=ids, position_ids=position_ids, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=7,
              max_length_k=7)
    sp_kernels.kernelize(model)
    out = model(input_ids=ids, position_ids=position_ids, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=7,
                max_length_k=7).logits
    torch.testing.assert_close(out[:, :5], model(input_ids=ids[:, :5]).logits, rtol=1e-10, atol=1e-10)


def cache_keyword(model) -> str:
    """The cache keyword of this transformers' model forwards: ``cache`` from 5.24, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


@pytest.mark.parametrize("family,dtype,tol", FAMILIES)
def test_decoded_tokens_take_the_decode_step(family, dtype, tol):
    """A decoded token without autograd runs the decode step (the conv and the recurrence on the cache's own
    tensors, in place): the cache keeps its state tensors, whose values equal transformers'."""
    from unittest import mock

    from sp_kernels.kernelize import gated_deltanet

    base = build(family, dtype, use_cache=True)
    model = copy.deepcopy(base)
    sp_kernels.kernelize(model, mode="inference")
    ids, nxt = torch.randint(0, 96, (2, 6)), torch.randint(0, 96, (2, 1))
    cache = cache_keyword(base)
    with torch.no_grad():
        a, b = model(input_ids=ids, use_cache=True), base(input_ids=ids, use_cache=True)
        ca, cb = getattr(a, cache), getattr(b, cache)
        layers = [i for i, layer in enumerate(model.model.layers) if hasattr(layer, "linear_attn")]
        held = {i: (ca.get_conv_state(i), ca.get_recurrent_state(i)) for i in layers}
        with mock.patch.object(gated_deltanet, "_decode_step", wraps=gated_deltanet._decode_step) as step:
            for _ in range(2):
                la = model(input_ids=nxt, use_cache=True, **{cache: ca}).logits
                lb = base(input_ids=nxt, use_cache=True, **{cache: cb}).logits
        assert step.call_count == 2 * len(layers)
        torch.testing.assert_close(la, lb, rtol=TRANSFORMERS_TOL, atol=TRANSFORMERS_TOL)
        for i in layers:
            assert ca.get_conv_state(i) is held[i][0] and ca.get_recurrent_state(i) is held[i][1]
            torch.testing.assert_close(ca.get_recurrent_state(i), cb.get_recurrent_state(i).to(dtype),
                                       rtol=TRANSFORMERS_TOL, atol=TRANSFORMERS_TOL)
            torch.testing.assert_close(ca.get_conv_state(i), cb.get_conv_state(i), rtol=TRANSFORMERS_TOL,
                                       atol=TRANSFORMERS_TOL)


@pytest.mark.parametrize("family,dtype,tol", FAMILIES)
def test_generate_with_cache_matches_transformers(family, dtype, tol):
    base = build(family, dtype, use_cache=True)
    model = copy.deepcopy(base)
    sp_kernels.kernelize(model, mode="inference")
    ids = torch.randint(0, 96, (2, 6))
    kwargs = dict(max_new_tokens=8, do_sample=False, use_cache=True)
    cache = cache_keyword(base)
    with torch.no_grad():
        assert torch.equal(model.generate(ids, **kwargs), base.generate(ids, **kwargs))
        a = model(input_ids=ids, use_cache=True)
        b = base(input_ids=ids, use_cache=True)
        assert getattr(a, cache) is not None
        nxt = torch.randint(0, 96, (2, 1))
        for _ in range(3):  # decode steps through the cache, by the keyword this transformers uses
            la = model(input_ids=nxt, use_cache=True, **{cache: getattr(a, cache)}).logits
            lb = base(input_ids=nxt, use_cache=True, **{cache: getattr(b, cache)}).logits
            torch.testing.assert_close(la, lb, rtol=TRANSFORMERS_TOL, atol=TRANSFORMERS_TOL)
        for n in (5, 20):  # continuations of several tokens: the recurrent path (T <= 16), then the chunked one
            more = torch.randint(0, 96, (2, n))
            lm = model(input_ids=more, use_cache=True, **{cache: getattr(a, cache)}).logits
            lt = base(input_ids=more, use_cache=True, **{cache: getattr(b, cache)}).logits
            torch.testing.assert_close(lm, lt, rtol=TRANSFORMERS_TOL, atol=TRANSFORMERS_TOL)
        la = model(input_ids=nxt, use_cache=True, **{cache: getattr(a, cache)}).logits
        lb = base(input_ids=nxt, use_cache=True, **{cache: getattr(b, cache)}).logits
        torch.testing.assert_close(la, lb, rtol=TRANSFORMERS_TOL, atol=TRANSFORMERS_TOL)
        # without the cache the last step differs: the comparison above did use the state
        fresh = model(input_ids=nxt).logits
        assert (fresh - la).abs().max() > 1e-3
