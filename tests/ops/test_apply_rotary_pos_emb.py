"""apply_rotary_pos_emb: torch implementation vs the float64 reference (forward and backward), transformers."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sp_kernels import dispatch
from sp_kernels import apply_rotary_pos_emb
from sp_kernels.kernels.apply_rotary_pos_emb.api import OP

F64 = torch.float64


def _randn(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64)


def _inputs(B, H, HK, T, D, R, *, unsqueeze_dim=1, cos_batch=None, seed=0):
    cb = B if cos_batch is None else cos_batch
    layout = (lambda h: (B, h, T, D)) if unsqueeze_dim == 1 else (lambda h: (B, T, h, D))
    # cos/sin are free inputs here (not tied to an angle) so their gradients are independent checks
    return {
        "q": _randn(*layout(H), seed=seed),
        "k": _randn(*layout(HK), seed=seed + 1),
        "cos": _randn(cb, T, R, seed=seed + 2),
        "sin": _randn(cb, T, R, seed=seed + 3),
    }


def _run(impl, dtype, inputs, seed=100, **kw):
    leaves = {k: t.detach().to(dtype).requires_grad_(True) for k, t in inputs.items()}
    outs = apply_rotary_pos_emb(**leaves, impl=impl, **kw)
    for o, name in zip(outs, ("q", "k")):
        assert o.dtype == dtype and o.shape == inputs[name].shape
    loss = sum((o.to(F64) * _randn(*o.shape, seed=seed + i)).sum() for i, o in enumerate(outs))
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return [o.detach().to(F64) for o in outs], {k: g.to(F64) for k, g in zip(leaves, grads)}


def _assert_close(a, b, tol):
    for oa, ob in zip(a[0], b[0]):
        torch.testing.assert_close(oa, ob, atol=tol, rtol=tol)
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        torch.testing.assert_close(a[1][k], b[1][k], atol=tol, rtol=tol, msg=lambda m: f"grad {k}: {m}")


CASES = [
    # B, H, HK, T, D, R
    (2, 4, 4, 7, 8, 8),  # full rotary, odd T
    (2, 4, 2, 7, 8, 4),  # partial rotary, grouped KV heads
    (1, 3, 1, 6, 6, 2),  # T == D, R = 2
    (2, 2, 1, 1, 16, 4),  # T = 1 (decode), Qwen3.5-like partial factor 0.25
    (1, 2, 2, 5, 10, 6),  # R not a power of two
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "B{}H{}HK{}T{}D{}R{}".format(*c))
@pytest.mark.parametrize("unsqueeze_dim", [1, 2])
@pytest.mark.parametrize("cos_batch", ["B", 1], ids=["cosB", "cos1"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)], ids=["f64", "f32"])
def test_torch_matches_reference(case, unsqueeze_dim, cos_batch, dtype, tol):
    B, H, HK, T, D, R = case
    inputs = _inputs(*case, unsqueeze_dim=unsqueeze_dim, cos_batch=B if cos_batch == "B" else 1, seed=sum(case))
    ref = _run("reference", F64, inputs, unsqueeze_dim=unsqueeze_dim)
    got = _run("torch", dtype, inputs, unsqueeze_dim=unsqueeze_dim)
    _assert_close(got, ref, tol)


def test_partial_rotary_passes_tail_through():
    inputs = _inputs(2, 3, 1, 5, 12, 4)
    for impl in ("torch", "reference"):
        q_out, k_out = apply_rotary_pos_emb(**inputs, impl=impl)
        assert torch.equal(q_out[..., 4:], inputs["q"][..., 4:])
        assert torch.equal(k_out[..., 4:], inputs["k"][..., 4:])


def test_is_a_rotation_for_real_angles():
    """With cos/sin of real angles (as from a rotary embedding) the rotated part keeps each pair's norm."""
    B, H, T, D, R = 1, 2, 6, 8, 8
    inv_freq = 1.0 / (10000 ** (torch.arange(0, R, 2, dtype=F64) / R))
    freqs = torch.arange(T, dtype=F64)[:, None] * inv_freq[None]
    emb = torch.cat([freqs, freqs], dim=-1)[None]
    q = _randn(B, H, T, D)
    q_out, _ = apply_rotary_pos_emb(q, q, emb.cos(), emb.sin(), impl="torch")
    pair_norm = lambda x: x[..., : R // 2] ** 2 + x[..., R // 2 : R] ** 2  # noqa: E731
    torch.testing.assert_close(pair_norm(q_out), pair_norm(q))
    torch.testing.assert_close(q_out[:, :, 0], q[:, :, 0])  # position 0: angle 0


@given(
    B=st.integers(1, 3),
    H=st.integers(1, 4),
    HK=st.integers(1, 4),
    T=st.integers(1, 9),
    half=st.integers(1, 4),
    extra=st.integers(0, 5),
    unsqueeze_dim=st.sampled_from([1, 2]),
    cos_one=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(deadline=None, max_examples=15)
def test_hypothesis_shapes(B, H, HK, T, half, extra, unsqueeze_dim, cos_one, seed):
    R = 2 * half
    inputs = _inputs(B, H, HK, T, R + extra, R, unsqueeze_dim=unsqueeze_dim, cos_batch=1 if cos_one else B, seed=seed)
    ref = _run("reference", F64, inputs, unsqueeze_dim=unsqueeze_dim)
    got = _run("torch", F64, inputs, unsqueeze_dim=unsqueeze_dim)
    _assert_close(got, ref, 1e-12)


# --- what users use today: transformers ------------------------------------------------------------------------


@pytest.mark.parametrize("R", [8, 4], ids=["full", "partial"])
@pytest.mark.parametrize("unsqueeze_dim", [1, 2])
@pytest.mark.parametrize(
    "q_dtype,cos_dtype",
    [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32),
     (torch.float32, torch.bfloat16)],
    ids=["f32", "bf16", "bf16-q-f32-cos", "f32-q-bf16-cos"],
)
@pytest.mark.parametrize("impl", ["torch", "reference"])
def test_matches_transformers(R, unsqueeze_dim, q_dtype, cos_dtype, impl):
    from transformers.models.qwen3_5.modeling_qwen3_5 import apply_rotary_pos_emb as hf_rotary

    inputs = _inputs(2, 4, 2, 5, 8, R, unsqueeze_dim=unsqueeze_dim, seed=R)
    q, k = inputs["q"].to(q_dtype), inputs["k"].to(q_dtype)
    cos, sin = inputs["cos"].to(cos_dtype), inputs["sin"].to(cos_dtype)
    want = hf_rotary(q, k, cos, sin, unsqueeze_dim=unsqueeze_dim)
    got = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim, impl=impl)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype  # bf16 q with f32 cos -> f32, as transformers
        # both round differently from transformers' three roundings (torch: fused multiply-adds, reference: f32
        # accumulation): bf16 results differ by a few bf16 ulps, f32 by a few f32 ulps
        tol = 1e-2 if torch.bfloat16 in (q_dtype, cos_dtype) else 1e-5
        torch.testing.assert_close(g, w, atol=tol, rtol=tol)


# --- dispatch -------------------------------------------------------------------------------------------------


def test_registered_and_default_selection():
    impls = dispatch.implementations(OP)
    assert not impls["reference"].selectable
    assert dispatch.preference(OP) == ('torch_npu.npu_rotary_mul', 'triton', 'fla', 'torch', 'reference')  # best first; the reference only when forced
    inputs = _inputs(1, 2, 2, 3, 4, 4)
    got = apply_rotary_pos_emb(**inputs)
    want = apply_rotary_pos_emb(**inputs, impl="reference")
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


# --- bad input: every error names the argument ----------------------------------------------------------------


def _good(**changes):
    args = _inputs(2, 4, 2, 5, 8, 4)
    args.update(changes)
    return args


def test_bad_q_rank():
    with pytest.raises(ValueError, match="q:"):
        apply_rotary_pos_emb(**_good(q=_randn(2, 5, 8)))


def test_bad_k_rank():
    with pytest.raises(ValueError, match="k:"):
        apply_rotary_pos_emb(**_good(k=_randn(2, 2, 5, 8, 1)))


def test_bad_cos_rank():
    with pytest.raises(ValueError, match="cos:"):
        apply_rotary_pos_emb(**_good(cos=_randn(2, 1, 5, 4)))


def test_bad_sin_rank():
    with pytest.raises(ValueError, match="sin:"):
        apply_rotary_pos_emb(**_good(sin=_randn(5, 4)))


def test_bad_q_type():
    with pytest.raises(TypeError, match="q:"):
        apply_rotary_pos_emb(**_good(q=None))


def test_bad_k_head_dim():
    with pytest.raises(ValueError, match="k:"):
        apply_rotary_pos_emb(**_good(k=_randn(2, 2, 5, 6)))


def test_bad_k_time():
    with pytest.raises(ValueError, match="k:"):
        apply_rotary_pos_emb(**_good(k=_randn(2, 2, 4, 8)))


def test_bad_cos_time():
    with pytest.raises(ValueError, match="cos:"):
        apply_rotary_pos_emb(**_good(cos=_randn(2, 4, 4), sin=_randn(2, 4, 4)))


def test_bad_cos_batch():
    with pytest.raises(ValueError, match="cos:"):
        apply_rotary_pos_emb(**_good(cos=_randn(3, 5, 4), sin=_randn(3, 5, 4)))


def test_bad_sin_shape():
    with pytest.raises(ValueError, match="sin:"):
        apply_rotary_pos_emb(**_good(sin=_randn(2, 5, 6)))


def test_bad_layout_for_unsqueeze_dim():
    """[B, H, T, D] tensors with unsqueeze_dim=2 are read as [B, T, H, D]: T no longer matches cos's."""
    args = _good(k=_randn(2, 4, 5, 8))
    with pytest.raises(ValueError, match="cos:"):
        apply_rotary_pos_emb(**args, unsqueeze_dim=2)


@pytest.mark.parametrize("dim", [3, 1.0, True])
def test_bad_unsqueeze_dim(dim):
    with pytest.raises(ValueError, match="^unsqueeze_dim: expected 1"):
        apply_rotary_pos_emb(**_good(), unsqueeze_dim=dim)


def test_bad_odd_rotary_dim():
    with pytest.raises(ValueError, match="cos:.*even"):
        apply_rotary_pos_emb(**_good(cos=_randn(2, 5, 3), sin=_randn(2, 5, 3)))


def test_bad_too_large_rotary_dim():
    with pytest.raises(ValueError, match="cos:.*exceeds"):
        apply_rotary_pos_emb(**_good(cos=_randn(2, 5, 10), sin=_randn(2, 5, 10)))


def test_bad_k_dtype():
    with pytest.raises(TypeError, match="k:"):
        apply_rotary_pos_emb(**_good(k=_randn(2, 2, 5, 8).float()))


def test_bad_sin_dtype():
    with pytest.raises(TypeError, match="sin:"):
        apply_rotary_pos_emb(**_good(sin=_randn(2, 5, 4).float()))


def test_bad_integer_cos():
    with pytest.raises(TypeError, match="cos:"):
        apply_rotary_pos_emb(**_good(cos=torch.ones(2, 5, 4, dtype=torch.long)))


def test_bad_k_device():
    with pytest.raises(ValueError, match="k:"):
        apply_rotary_pos_emb(**_good(k=torch.empty(2, 2, 5, 8, dtype=F64, device="meta")))


def test_bad_cos_device():
    with pytest.raises(ValueError, match="cos:"):
        apply_rotary_pos_emb(**_good(cos=torch.empty(2, 5, 4, dtype=F64, device="meta")))


def test_unknown_impl():
    with pytest.raises(ValueError, match="impl:"):
        apply_rotary_pos_emb(**_good(), impl="no-such-kernel")


def test_impl_not_a_str():
    with pytest.raises(TypeError, match="^impl: expected an implementation name"):
        apply_rotary_pos_emb(**_good(), impl=b"torch")
