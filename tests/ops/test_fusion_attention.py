"""fusion_attention: SDPA implementation vs the float64 reference (forward and backward), packing, plain SDPA."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sp_kernels import dispatch
from sp_kernels import fusion_attention
from sp_kernels.kernels.fusion_attention.api import OP
from sp_kernels.kernels.fusion_attention.torch_impl import attention_sdpa

F64 = torch.float64


def _randn(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64)


def _inputs(B, TQ, TK, H, HKV, D, DV, seed=0):
    return {
        "q": _randn(B, TQ, H, D, seed=seed),
        "k": _randn(B, TK, HKV, D, seed=seed + 1),
        "v": _randn(B, TK, HKV, DV, seed=seed + 2),
    }


def _run(impl, dtype, inputs, seed=100, **kw):
    leaves = {k: t.detach().to(dtype).requires_grad_(True) for k, t in inputs.items()}
    o = fusion_attention(**leaves, impl=impl, **kw)
    q = inputs["q"]
    assert o.dtype == dtype and o.shape == q.shape[:3] + inputs["v"].shape[-1:]
    loss = (o.to(F64) * _randn(*o.shape, seed=seed)).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True, materialize_grads=True)
    return o.detach().to(F64), {k: g.to(F64) for k, g in zip(leaves, grads)}


def _assert_close(a, b, tol):
    torch.testing.assert_close(a[0], b[0], atol=tol, rtol=tol)
    for k in a[1]:
        torch.testing.assert_close(a[1][k], b[1][k], atol=tol, rtol=tol, msg=lambda m: f"grad {k}: {m}")


CASES = [
    # B, TQ, TK, H, HKV, D, DV
    (2, 7, 7, 4, 2, 8, 8),  # odd T, grouped KV heads
    (1, 8, 8, 2, 1, 8, 4),  # T == D, DV != D, multi-query
    (2, 1, 9, 4, 1, 8, 8),  # T = 1 decode against a cache (TQ < TK)
    (1, 3, 7, 3, 3, 4, 5),  # TQ < TK
    (1, 7, 4, 2, 2, 4, 4),  # TQ > TK: the first 3 query rows see no key when causal
    (2, 1, 1, 2, 2, 4, 4),  # T = 1
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "B{}TQ{}TK{}H{}HKV{}D{}DV{}".format(*c))
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)], ids=["f64", "f32"])
def test_sdpa_matches_reference(case, causal, dtype, tol):
    inputs = _inputs(*case, seed=sum(case))
    ref = _run("reference", F64, inputs, causal=causal)
    got = _run("sdpa", dtype, inputs, causal=causal)
    _assert_close(got, ref, tol)


def test_custom_scale():
    inputs = _inputs(1, 5, 5, 2, 1, 4, 4)
    _assert_close(_run("sdpa", F64, inputs, scale=0.3), _run("reference", F64, inputs, scale=0.3), 1e-10)


def test_rows_that_see_no_key_are_zero():
    inputs = _inputs(1, 6, 2, 2, 1, 4, 3)
    for impl in ("sdpa", "reference"):
        o, grads = _run(impl, F64, inputs, causal=True)
        assert torch.equal(o[:, :4], torch.zeros_like(o[:, :4]))
        assert torch.equal(grads["q"][:, :4], torch.zeros_like(grads["q"][:, :4]))
        assert o[:, 4:].abs().sum() > 0 and torch.isfinite(grads["k"]).all()


def test_gqa_without_native_support_matches():
    """The repeat-kv path (devices whose SDPA lacks enable_gqa) equals the native one."""
    inputs = _inputs(1, 5, 6, 4, 2, 4, 3)
    qt, kt, vt = (inputs[n].requires_grad_(True) for n in "qkv")
    a = attention_sdpa(qt, kt, vt, causal=True, scale=0.5, native_gqa=True)
    b = attention_sdpa(qt, kt, vt, causal=True, scale=0.5, native_gqa=False)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    cot = _randn(*a.shape)
    ga = torch.autograd.grad(a, (qt, kt, vt), cot)
    gb = torch.autograd.grad(b, (qt, kt, vt), cot)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("impl", ["sdpa", "reference"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_packed_equals_each_sequence_alone(impl, causal):
    lens = [3, 0, 1, 6, 2]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)
    T = sum(lens)
    inputs = _inputs(1, T, T, 4, 2, 4, 3, seed=9)
    o = fusion_attention(**inputs, causal=causal, cu_seqlens=cu, impl=impl)
    bounds = cu.tolist()
    for s, e in zip(bounds, bounds[1:]):
        alone = {n: t[:, s:e] for n, t in inputs.items()}
        want = fusion_attention(**alone, causal=causal, impl=impl)
        torch.testing.assert_close(o[:, s:e], want, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)], ids=["f64", "f32"])
def test_packed_sdpa_matches_reference_backward(causal, dtype, tol):
    lens = [4, 1, 0, 7, 3]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    inputs = _inputs(1, sum(lens), sum(lens), 4, 1, 8, 4, seed=4)
    ref = _run("reference", F64, inputs, causal=causal, cu_seqlens=cu)
    got = _run("sdpa", dtype, inputs, causal=causal, cu_seqlens=cu)
    _assert_close(got, ref, tol)


@given(
    B=st.integers(1, 2),
    TQ=st.integers(1, 9),
    TK=st.integers(1, 9),
    HKV=st.integers(1, 3),
    group=st.integers(1, 3),
    D=st.integers(1, 8),
    DV=st.integers(1, 8),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(deadline=None, max_examples=15)
def test_hypothesis_shapes(B, TQ, TK, HKV, group, D, DV, causal, seed):
    inputs = _inputs(B, TQ, TK, HKV * group, HKV, D, DV, seed=seed)
    _assert_close(_run("sdpa", F64, inputs, causal=causal), _run("reference", F64, inputs, causal=causal), 1e-10)


@given(lens=st.lists(st.integers(0, 6), min_size=1, max_size=4), causal=st.booleans(), seed=st.integers(0, 2**16))
@settings(deadline=None, max_examples=15)
def test_hypothesis_packed(lens, causal, seed):
    T = sum(lens)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    inputs = _inputs(1, T, T, 2, 1, 4, 3, seed=seed)
    ref = _run("reference", F64, inputs, causal=causal, cu_seqlens=cu)
    _assert_close(_run("sdpa", F64, inputs, causal=causal, cu_seqlens=cu), ref, 1e-10)


# --- what users use today: SDPA with an explicit mask and repeat_kv -------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: "B{}TQ{}TK{}H{}HKV{}D{}DV{}".format(*c))
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_matches_sdpa_with_explicit_mask(case, causal):
    from transformers.models.qwen3_5.modeling_qwen3_5 import repeat_kv

    B, TQ, TK, H, HKV, D, DV = case
    inputs = _inputs(*case, seed=1)
    q, k, v = (inputs[n].transpose(1, 2) for n in "qkv")
    k, v = repeat_kv(k, H // HKV), repeat_kv(v, H // HKV)
    i, j = torch.arange(TQ).view(TQ, 1), torch.arange(TK).view(1, TK)
    mask = (j <= i + TK - TQ) if causal else torch.ones(TQ, TK, dtype=torch.bool)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    got = fusion_attention(**inputs, causal=causal)
    sees = mask.any(dim=1)  # rows with no visible key: 0 here by definition, undefined for plain SDPA
    torch.testing.assert_close(got[:, sees], want[:, sees], atol=1e-12, rtol=1e-12)
    assert torch.equal(got[:, ~sees], torch.zeros_like(got[:, ~sees]))


def test_low_precision_keeps_dtype():
    inputs = {n: t.to(torch.bfloat16) for n, t in _inputs(1, 5, 5, 2, 1, 8, 8).items()}
    o = fusion_attention(**inputs)
    ref = fusion_attention(**inputs, impl="reference")
    assert o.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(o, ref, atol=2e-2, rtol=2e-2)


# --- dispatch -------------------------------------------------------------------------------------------------


def test_registered_and_default_selection():
    impls = dispatch.implementations(OP)
    assert not impls["reference"].selectable
    assert dispatch.preference(OP) == ('flash_attn', 'torch_npu.npu_fusion_attention', 'sdpa', 'reference')  # best first; the reference only when forced
    shapes = {"B": 1, "TQ": 4, "TK": 4, "H": 2, "HKV": 1, "D": 8, "DV": 8}
    ctx = dispatch.Context(OP, dispatch.detect(torch.device("cpu")), shapes=shapes, options={"causal": True})
    assert dispatch.select(OP, ctx).chosen.name == "sdpa"


# --- bad input: every error names the argument ----------------------------------------------------------------


def _good(**changes):
    args = _inputs(2, 5, 5, 4, 2, 8, 6)
    args.update(changes)
    return args


def test_bad_q_rank():
    with pytest.raises(ValueError, match="q:"):
        fusion_attention(**_good(q=_randn(2, 5, 32)))


def test_bad_k_rank():
    with pytest.raises(ValueError, match="k:"):
        fusion_attention(**_good(k=_randn(2, 5, 16)))


def test_bad_v_rank():
    with pytest.raises(ValueError, match="v:"):
        fusion_attention(**_good(v=_randn(2, 5, 2, 6, 1)))


def test_bad_q_type():
    with pytest.raises(TypeError, match="q:"):
        fusion_attention(**_good(q="q"))


def test_bad_k_head_dim():
    with pytest.raises(ValueError, match="k:"):
        fusion_attention(**_good(k=_randn(2, 5, 2, 4)))


def test_bad_k_batch():
    with pytest.raises(ValueError, match="k:"):
        fusion_attention(**_good(k=_randn(1, 5, 2, 8)))


def test_bad_v_length():
    with pytest.raises(ValueError, match="v:"):
        fusion_attention(**_good(v=_randn(2, 4, 2, 6)))


def test_bad_v_heads():
    with pytest.raises(ValueError, match="v:"):
        fusion_attention(**_good(v=_randn(2, 5, 1, 6)))


def test_bad_head_grouping():
    with pytest.raises(ValueError, match="k:.*multiple"):
        fusion_attention(**_good(k=_randn(2, 5, 3, 8), v=_randn(2, 5, 3, 6)))


def test_bad_k_dtype():
    with pytest.raises(TypeError, match="k:"):
        fusion_attention(**_good(k=_randn(2, 5, 2, 8).float()))


def test_bad_v_dtype():
    with pytest.raises(TypeError, match="v:"):
        fusion_attention(**_good(v=_randn(2, 5, 2, 6).float()))


def test_bad_k_device():
    with pytest.raises(ValueError, match="k:"):
        fusion_attention(**_good(k=torch.empty(2, 5, 2, 8, dtype=F64, device="meta")))


def test_bad_v_device():
    with pytest.raises(ValueError, match="v:"):
        fusion_attention(**_good(v=torch.empty(2, 5, 2, 6, dtype=F64, device="meta")))


@pytest.mark.parametrize("scale", [-1.0, 0.0, float("inf"), float("nan")])
def test_bad_scale(scale):
    with pytest.raises(ValueError, match="^scale: expected a finite positive number"):
        fusion_attention(**_good(), scale=scale)


def test_bad_head_dim_zero():
    with pytest.raises(ValueError, match="^q: expected a head dim D >= 1"):
        fusion_attention(**_good(q=_randn(2, 5, 4, 0), k=_randn(2, 5, 2, 0)))


def test_bad_causal():
    with pytest.raises(TypeError, match="causal:"):
        fusion_attention(**_good(), causal="yes")


def _packed(cu, B=1, TQ=6, TK=6):
    return _inputs(B, TQ, TK, 2, 1, 4, 4) | {"cu_seqlens": cu}


def test_bad_cu_seqlens_float():
    with pytest.raises(TypeError, match="cu_seqlens:"):
        fusion_attention(**_packed(torch.tensor([0.0, 6.0])))


def test_bad_cu_seqlens_not_1d():
    with pytest.raises(ValueError, match="cu_seqlens:"):
        fusion_attention(**_packed(torch.tensor([[0, 6]])))


def test_bad_cu_seqlens_start():
    with pytest.raises(ValueError, match="cu_seqlens:"):
        fusion_attention(**_packed(torch.tensor([2, 6])))


def test_bad_cu_seqlens_decreasing():
    with pytest.raises(ValueError, match="cu_seqlens:"):
        fusion_attention(**_packed(torch.tensor([0, 5, 3, 6])))


def test_bad_cu_seqlens_end():
    with pytest.raises(ValueError, match="cu_seqlens:"):
        fusion_attention(**_packed(torch.tensor([0, 3, 7])))


def test_bad_cu_seqlens_batch():
    with pytest.raises(ValueError, match="cu_seqlens:"):
        fusion_attention(**_packed(torch.tensor([0, 3, 6]), B=2))


def test_bad_cu_seqlens_unequal_lengths():
    with pytest.raises(ValueError, match="cu_seqlens:"):
        fusion_attention(**_packed(torch.tensor([0, 3, 6]), TK=8))


def test_unknown_impl():
    with pytest.raises(ValueError, match="impl:"):
        fusion_attention(**_good(), impl="flash-of-genius")


def test_impl_not_a_str():
    with pytest.raises(TypeError, match="^impl: expected an implementation name .str., got int"):
        fusion_attention(**_good(), impl=5)
