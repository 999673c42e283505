"""chunk_gated_delta_rule: the chunked torch implementation against the float64 per-token reference.

Parity is checked forward and backward (gradients of q, k, v, g, beta and initial_state) through the public API
with ``impl=`` forcing the implementation; the reference itself is cross-checked against transformers.
"""
from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import sp_kernels
from sp_kernels.dispatch import implementations
from sp_kernels import chunk_gated_delta_rule

OP = "chunk_gated_delta_rule"
NAMES = ("q", "k", "v", "g", "beta", "initial_state")


def make_inputs(B, T, H, HV, K, V, *, l2norm=True, n_states=None, seed=0, dtype=torch.float64):
    """Realistic random inputs (float64 master copy cast to ``dtype``): g = logsigmoid(randn) < 0,
    beta = sigmoid(randn); without l2norm in the kernel k is unit-norm so the recurrence stays stable."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    q, k, v = randn(B, T, H, K), randn(B, T, H, K), randn(B, T, HV, V)
    if not l2norm:
        k = F.normalize(k, dim=-1)
        q = q / K**0.5
    g = F.logsigmoid(randn(B, T, HV))
    beta = randn(B, T, HV).sigmoid()
    h0 = None if n_states is None else randn(n_states, HV, K, V)
    return {
        name: None if x is None else x.to(dtype)
        for name, x in zip(NAMES, (q, k, v, g, beta, h0))
    }


def run(impl, inputs, *, seed=1, **kwargs):
    """Output, final state and the gradients of a random projection of both w.r.t. every input given."""
    leaves = {n: x.detach().clone().requires_grad_() for n, x in inputs.items() if x is not None}
    o, state = chunk_gated_delta_rule(
        leaves["q"], leaves["k"], leaves["v"], leaves["g"], leaves["beta"],
        initial_state=leaves.get("initial_state"), impl=impl, **kwargs,
    )
    gen = torch.Generator().manual_seed(seed)
    loss = (o.double() * torch.randn(o.shape, generator=gen, dtype=torch.float64)).sum()
    if state is not None:
        loss = loss + (state.double() * torch.randn(state.shape, generator=gen, dtype=torch.float64)).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return o, state, dict(zip(leaves, grads))


def assert_parity(got, want, atol, rtol):
    (o1, s1, g1), (o2, s2, g2) = got, want
    torch.testing.assert_close(o1.double(), o2.double(), atol=atol, rtol=rtol, msg=lambda m: f"o: {m}")
    assert (s1 is None) == (s2 is None)
    if s1 is not None:
        torch.testing.assert_close(s1.double(), s2.double(), atol=atol, rtol=rtol, msg=lambda m: f"state: {m}")
    assert g1.keys() == g2.keys()
    for name in g1:
        torch.testing.assert_close(
            g1[name].double(), g2[name].double(), atol=atol, rtol=rtol, msg=lambda m, n=name: f"d{n}: {m}"
        )


SHAPES = [  # B, T, H, HV, K, V
    pytest.param((2, 70, 2, 2, 16, 16), id="T70"),
    pytest.param((1, 130, 2, 4, 16, 32), id="T130-gva"),
    pytest.param((2, 32, 1, 1, 32, 16), id="T==K"),
    pytest.param((2, 1, 2, 4, 16, 8), id="T1-gva"),
    pytest.param((1, 128, 1, 3, 8, 8), id="T128-gva3"),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("l2norm", [True, False], ids=["l2norm", "no-l2norm"])
@pytest.mark.parametrize("with_state", [True, False], ids=["state", "no-state"])
def test_float64_matches_reference(shape, l2norm, with_state):
    B = shape[0]
    inputs = make_inputs(*shape, l2norm=l2norm, n_states=B if with_state else None, seed=sum(shape))
    kw = dict(output_final_state=with_state, use_qk_l2norm_in_kernel=l2norm)
    got, want = run("torch", inputs, **kw), run("reference", inputs, **kw)
    assert got[0].dtype == torch.float64 and got[0].shape == (B, shape[1], shape[3], shape[5])
    if with_state:
        assert got[1].dtype == torch.float64 and got[1].shape == (B, shape[3], shape[4], shape[5])
    else:
        assert got[1] is None
    assert_parity(got, want, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("shape", SHAPES[:3])
@pytest.mark.parametrize("l2norm", [True, False], ids=["l2norm", "no-l2norm"])
def test_float32_close_to_float64_reference(shape, l2norm):
    inputs = make_inputs(*shape, l2norm=l2norm, n_states=shape[0], seed=7)
    inputs32 = {n: x.float() for n, x in inputs.items()}
    kw = dict(output_final_state=True, use_qk_l2norm_in_kernel=l2norm)
    got = run("torch", inputs32, **kw)
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.float32
    assert all(got[2][n].dtype == torch.float32 for n in got[2])
    assert_parity(got, run("reference", inputs, **kw), atol=2e-4, rtol=2e-4)


def test_bf16_qkv_with_float32_gate():
    """As transformers calls it: q/k/v (and beta) in bf16, g in float32; o in bf16, state in float32."""
    inputs = make_inputs(1, 70, 2, 4, 16, 16, n_states=1, seed=3)
    low = {n: x.to(torch.float32 if n in ("g", "initial_state") else torch.bfloat16) for n, x in inputs.items()}
    kw = dict(output_final_state=True, use_qk_l2norm_in_kernel=True)
    got = run("torch", low, **kw)
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == torch.float32
    assert {n: g.dtype for n, g in got[2].items()} == {n: x.dtype for n, x in low.items()}
    want = run("reference", {n: x.double() for n, x in low.items()}, **kw)  # same rounded inputs, float64
    assert_parity(got, want, atol=3e-2, rtol=3e-2)


LENGTHS = [1, 70, 0, 5, 64]  # one token, crossing a chunk boundary, empty, short, exactly one chunk


@pytest.mark.parametrize("l2norm", [True, False], ids=["l2norm", "no-l2norm"])
def test_packed_matches_reference_and_each_sequence_alone(l2norm):
    T, N = sum(LENGTHS), len(LENGTHS)
    cu = torch.tensor([0] + LENGTHS).cumsum(0)
    inputs = make_inputs(1, T, 2, 4, 16, 16, l2norm=l2norm, n_states=N, seed=11)
    kw = dict(output_final_state=True, use_qk_l2norm_in_kernel=l2norm, cu_seqlens=cu)
    packed = run("torch", inputs, **kw)
    assert packed[0].shape == (1, T, 4, 16) and packed[1].shape == (N, 4, 16, 16)
    assert_parity(packed, run("reference", inputs, **kw), atol=1e-9, rtol=1e-9)

    for n, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        alone = {name: x[n : n + 1] if name == "initial_state" else x[:, s:e] for name, x in inputs.items()}
        o, state = chunk_gated_delta_rule(
            *(alone[name] for name in NAMES[:5]), initial_state=alone["initial_state"],
            output_final_state=True, use_qk_l2norm_in_kernel=l2norm, impl="torch",
        )
        torch.testing.assert_close(packed[0][:, s:e], o, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(packed[1][n : n + 1], state, atol=1e-10, rtol=1e-10)
    empty = LENGTHS.index(0)
    torch.testing.assert_close(packed[1][empty], inputs["initial_state"][empty], atol=0, rtol=0)


def test_packed_without_initial_state_float32():
    T = sum(LENGTHS)
    cu = torch.tensor([0] + LENGTHS, dtype=torch.int32).cumsum(0, dtype=torch.int32)  # int32 is accepted
    inputs = make_inputs(1, T, 1, 2, 8, 8, seed=5)
    kw = dict(output_final_state=True, use_qk_l2norm_in_kernel=True, cu_seqlens=cu)
    got = run("torch", {n: x.float() for n, x in inputs.items() if x is not None}, **kw)
    assert_parity(got, run("reference", inputs, **kw), atol=2e-4, rtol=2e-4)
    assert got[1][LENGTHS.index(0)].abs().max() == 0


@settings(deadline=None, max_examples=15)
@given(
    B=st.integers(1, 2), T=st.integers(1, 140), H=st.integers(1, 2), G=st.integers(1, 2),
    K=st.sampled_from([4, 8, 16]), V=st.sampled_from([4, 8, 16]), l2norm=st.booleans(),
    with_state=st.booleans(), seed=st.integers(0, 2**16),
)
def test_random_shapes_match_reference(B, T, H, G, K, V, l2norm, with_state, seed):
    inputs = make_inputs(B, T, H, H * G, K, V, l2norm=l2norm, n_states=B if with_state else None, seed=seed)
    kw = dict(output_final_state=True, use_qk_l2norm_in_kernel=l2norm, scale=0.5)
    assert_parity(run("torch", inputs, **kw), run("reference", inputs, **kw), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("l2norm", [True, False], ids=["l2norm", "no-l2norm"])
def test_reference_matches_transformers(l2norm):
    """The reference's semantics, checked independently: transformers' per-token torch path (float32,
    scale K**-0.5, repeat_interleave for grouped value heads)."""
    modeling = pytest.importorskip("transformers.models.qwen3_5.modeling_qwen3_5")
    # unwrap: the hub/fla wrapper would route to fla's Triton kernel when fla is installed
    hf_recurrent = inspect.unwrap(modeling.torch_recurrent_gated_delta_rule)
    hf_chunk = inspect.unwrap(modeling.torch_chunk_gated_delta_rule)
    inputs = {n: x.float() for n, x in make_inputs(2, 70, 2, 4, 16, 8, l2norm=l2norm, n_states=2, seed=2).items()}
    args = [inputs[n] for n in NAMES[:5]]
    kw = dict(initial_state=inputs["initial_state"], output_final_state=True, use_qk_l2norm_in_kernel=l2norm)
    want_o, want_s = hf_recurrent(*args, **kw)
    for impl in ("reference", "torch"):
        o, s = chunk_gated_delta_rule(*args, **kw, impl=impl)
        torch.testing.assert_close(o, want_o, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(s, want_s, atol=1e-5, rtol=1e-5)
    chunk_o, chunk_s = hf_chunk(*args, **kw)
    torch.testing.assert_close(chunk_o, want_o, atol=1e-4, rtol=1e-4)


def test_registered_and_selected():
    table = implementations(OP)
    assert {"reference", "torch"} <= set(table)
    assert not table["reference"].selectable and table["torch"].selectable
    assert sp_kernels.chunk_gated_delta_rule is chunk_gated_delta_rule
    inputs = make_inputs(1, 5, 1, 1, 4, 4, dtype=torch.float32)
    o, _ = chunk_gated_delta_rule(*(inputs[n] for n in NAMES[:5]))  # automatic selection on CPU
    o_ref, _ = chunk_gated_delta_rule(*(inputs[n] for n in NAMES[:5]), impl="reference")
    torch.testing.assert_close(o, o_ref, atol=1e-5, rtol=1e-5)


# ---- bad input: every error names the argument --------------------------------------------------------------


def _base(B=1, T=6, H=2, HV=4, K=4, V=4):
    x = make_inputs(B, T, H, HV, K, V, dtype=torch.float32)
    return {n: x[n] for n in NAMES[:5]}


def _call(args, **kw):
    return chunk_gated_delta_rule(*(args[n] for n in NAMES[:5]), **kw)


def _with(**changes):
    args = _base()
    args.update(changes)
    return args


T_CU = torch.tensor([0, 2, 6])
BAD = [
    pytest.param(lambda: _call(_with(q=torch.randn(1, 6, 2))), ValueError, "q:", id="q-rank"),
    pytest.param(lambda: _call(_with(k=torch.randn(1, 6, 2, 8))), ValueError, "k:", id="k-shape-mismatch"),
    pytest.param(lambda: _call(_with(v=torch.randn(1, 6, 3, 4), g=torch.randn(1, 6, 3), beta=torch.rand(1, 6, 3))),
                 ValueError, "v:", id="hv-not-multiple-of-h"),
    pytest.param(lambda: _call(_with(k=torch.randn(1, 6, 2, 4, dtype=torch.float64))), TypeError, "k:",
                 id="k-dtype"),
    pytest.param(lambda: _call(_with(v=torch.randn(1, 6, 4, 4, dtype=torch.bfloat16))), TypeError, "v:",
                 id="v-dtype"),
    pytest.param(lambda: _call(_with(k=torch.empty(1, 6, 2, 4, device="meta"))), ValueError, "k:",
                 id="k-device"),
    pytest.param(lambda: _call(_with(g=torch.empty(1, 6, 4, device="meta"))), ValueError, "g:", id="g-device"),
    pytest.param(lambda: _call(_with(g=torch.randn(1, 6, 2))), ValueError, "g:", id="g-shape"),
    pytest.param(lambda: _call(_base(), cu_seqlens=torch.tensor([0.0, 6.0])), TypeError, "cu_seqlens:",
                 id="cu-float"),
    pytest.param(lambda: _call(_base(), cu_seqlens=torch.tensor([[0, 6]])), ValueError, "cu_seqlens:",
                 id="cu-2d"),
    pytest.param(lambda: _call(_base(), cu_seqlens=torch.tensor([1, 6])), ValueError, "cu_seqlens:",
                 id="cu-start"),
    pytest.param(lambda: _call(_base(), cu_seqlens=torch.tensor([0, 4, 2, 6])), ValueError, "cu_seqlens:",
                 id="cu-decreasing"),
    pytest.param(lambda: _call(_base(), cu_seqlens=torch.tensor([0, 2, 5])), ValueError, "cu_seqlens:",
                 id="cu-end"),
    pytest.param(lambda: _call(_base(B=2), cu_seqlens=T_CU), ValueError, "cu_seqlens:", id="cu-batch"),
    pytest.param(lambda: _call(_base(), initial_state=torch.randn(1, 2, 4, 4)), ValueError, "initial_state:",
                 id="state-shape"),
    pytest.param(lambda: _call(_base(), initial_state=torch.randn(1, 4, 4, 4), cu_seqlens=T_CU), ValueError,
                 "initial_state:", id="state-n-packed"),
    pytest.param(lambda: _call(_base(), impl="no-such-impl"), ValueError, "impl:", id="unknown-impl"),
    pytest.param(lambda: _call(_base(), output_final_state=1), TypeError, "output_final_state:",
                 id="flag-final-state"),
    pytest.param(lambda: _call(_base(), use_qk_l2norm_in_kernel="yes"), TypeError, "use_qk_l2norm_in_kernel:",
                 id="flag-l2norm"),
    pytest.param(lambda: _call(_base(), scale=-1.0), ValueError, "scale:", id="scale-negative"),
    pytest.param(lambda: _call(_base(), scale=float("inf")), ValueError, "^scale: expected a finite", id="scale-inf"),
    pytest.param(lambda: _call(_base(), scale=float("nan")), ValueError, "^scale: expected a finite", id="scale-nan"),
    pytest.param(lambda: _call(_base(), impl=5), TypeError, "^impl: expected an implementation name", id="impl-int"),
    pytest.param(lambda: _call(_base(K=0)), ValueError, "^q: expected a head dim K >= 1", id="head-dim-0"),
    pytest.param(lambda: _call(_base(H=0)), ValueError, "^v: value heads HV=4 must be a multiple", id="heads-0"),
]


@pytest.mark.parametrize("call, exc, match", BAD)
def test_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---- the hand-written backward of the chunked implementation ------------------------------------------------


@pytest.mark.parametrize("l2norm", [True, False], ids=["l2norm", "no-l2norm"])
@pytest.mark.parametrize("shape", [(1, 150, 2, 4, 16, 8), (2, 64, 1, 1, 8, 16)], ids=["T150-gva", "T64"])
def test_final_state_gradients(shape, l2norm):
    """A loss on the final state only, and on o and the state together: every input's gradient (through the
    reverse state scan, Gam_C and the chunk-end key decay) matches the reference."""
    inputs = make_inputs(*shape, l2norm=l2norm, n_states=shape[0], seed=21)
    kw = dict(output_final_state=True, use_qk_l2norm_in_kernel=l2norm, scale=0.7)

    def state_only(impl):
        leaves = {n: x.detach().clone().requires_grad_() for n, x in inputs.items()}
        _, state = chunk_gated_delta_rule(
            *(leaves[n] for n in NAMES[:5]), initial_state=leaves["initial_state"], impl=impl, **kw
        )
        weight = torch.randn(state.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        grads = torch.autograd.grad((state * weight).sum(), list(leaves.values()), allow_unused=True)
        return {n: torch.zeros_like(x) if d is None else d for (n, x), d in zip(leaves.items(), grads)}

    got, want = state_only("torch"), state_only("reference")
    assert got["q"].abs().max() == 0  # q does not reach the state
    for name in NAMES:
        torch.testing.assert_close(got[name], want[name], atol=1e-9, rtol=1e-9, msg=lambda m, n=name: f"d{n}: {m}")
    assert_parity(run("torch", inputs, **kw), run("reference", inputs, **kw), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("l2norm", [True, False], ids=["l2norm", "no-l2norm"])
def test_chunk_function_gradcheck(l2norm):
    """torch.autograd.gradcheck (float64, finite differences, fast mode: random projections) through the custom
    Function: two chunks, grouped value heads."""
    from sp_kernels.kernels.chunk_gated_delta_rule.chunk_autograd import CHUNK, ChunkGatedDeltaRule

    B, T, H, HV, K, V = 1, 2 * CHUNK, 1, 2, 4, 3
    x = make_inputs(B, T, H, HV, K, V, l2norm=l2norm, n_states=B, seed=5)
    args = [x[n].clone().requires_grad_() for n in NAMES]

    def f(q, k, v, g, beta, h0):
        return ChunkGatedDeltaRule.apply(q, k, v, g, beta, h0, 0.5, l2norm)

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


def test_chunk_function_leaves_inputs_untouched():
    """The Function normalises and scales chunked copies in place, never the caller's tensors."""
    x = make_inputs(1, 64, 1, 1, 8, 8, n_states=1, seed=9)
    before = {n: t.clone() for n, t in x.items()}
    chunk_gated_delta_rule(*(x[n] for n in NAMES[:5]), initial_state=x["initial_state"],
                           use_qk_l2norm_in_kernel=True, impl="torch")
    for n in NAMES:
        torch.testing.assert_close(x[n], before[n], atol=0, rtol=0)


@pytest.mark.parametrize("block", [1, 2, 4])
def test_blocks_of_chunks_match_reference(monkeypatch, block):
    """Large inputs are processed in blocks of chunks (forward and backward); force small blocks on a small input,
    including a partial last block, and check parity (o, state, every gradient)."""
    from sp_kernels.kernels.chunk_gated_delta_rule import chunk_autograd

    monkeypatch.setattr(chunk_autograd, "_block_chunks", lambda v: block)
    inputs = make_inputs(2, 330, 1, 2, 8, 16, n_states=2, seed=13)  # 6 chunks
    kw = dict(output_final_state=True, use_qk_l2norm_in_kernel=True, scale=0.6)
    assert_parity(run("torch", inputs, **kw), run("reference", inputs, **kw), atol=1e-9, rtol=1e-9)


# ---- the token-by-token path for short inputs (decoding) ------------------------------------------------------

SHORT = [  # B, T, H, HV, K, V
    pytest.param((2, 1, 2, 4, 16, 8), id="T1-gva"),
    pytest.param((1, 5, 1, 3, 8, 8), id="T5-gva3"),
    pytest.param((2, 16, 2, 2, 16, 16), id="T16==K"),
]


@pytest.mark.parametrize("shape", SHORT)
@pytest.mark.parametrize("l2norm", [True, False], ids=["l2norm", "no-l2norm"])
@pytest.mark.parametrize("with_state", [True, False], ids=["state", "no-state"])
def test_recurrent_matches_reference(shape, l2norm, with_state):
    inputs = make_inputs(*shape, l2norm=l2norm, n_states=shape[0] if with_state else None, seed=sum(shape) + 1)
    kw = dict(output_final_state=True, use_qk_l2norm_in_kernel=l2norm, scale=0.8)
    got = run("torch_recurrent", inputs, **kw)
    assert got[0].dtype == torch.float64 and got[1].dtype == torch.float64
    assert_parity(got, run("reference", inputs, **kw), atol=1e-10, rtol=1e-10)
    inputs32 = {n: None if x is None else x.float() for n, x in inputs.items()}
    assert_parity(run("torch_recurrent", inputs32, **kw), run("reference", inputs, **kw), atol=2e-5, rtol=2e-5)


def test_recurrent_packed_and_bf16():
    lengths = [1, 0, 5, 3]
    cu = torch.tensor([0] + lengths).cumsum(0)
    inputs = make_inputs(1, sum(lengths), 2, 4, 16, 16, n_states=len(lengths), seed=17)
    kw = dict(output_final_state=True, use_qk_l2norm_in_kernel=True, cu_seqlens=cu)
    assert_parity(run("torch_recurrent", inputs, **kw), run("reference", inputs, **kw), atol=1e-10, rtol=1e-10)
    low = {n: x.to(torch.float32 if n in ("g", "initial_state") else torch.bfloat16) for n, x in inputs.items()}
    got = run("torch_recurrent", low, **kw)
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == torch.float32
    assert_parity(got, run("reference", {n: x.double() for n, x in low.items()}, **kw), atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("T", [1, 3], ids=["T1", "T3"])  # T=1: the one-token path
@pytest.mark.parametrize("l2norm", [True, False], ids=["l2norm", "no-l2norm"])
@pytest.mark.parametrize("with_state", [True, False], ids=["state", "no-state"])
def test_recurrent_without_grad_steps_in_place_on_a_copy(T, l2norm, with_state):
    """Decoding (no autograd): the state is updated in place, on a copy; the caller's state is untouched and the
    result equals the reference."""
    x = make_inputs(2, T, 2, 4, 8, 8, l2norm=l2norm, n_states=2 if with_state else None, seed=19 + T)
    before = None if x["initial_state"] is None else x["initial_state"].clone()
    args = [x[n] for n in NAMES[:5]]
    kw = dict(initial_state=x["initial_state"], output_final_state=True, use_qk_l2norm_in_kernel=l2norm,
              impl="torch_recurrent", scale=0.7)
    with torch.no_grad():
        o, state = chunk_gated_delta_rule(*args, **kw)
    if with_state:
        torch.testing.assert_close(x["initial_state"], before, atol=0, rtol=0)
    want_o, want_state, _ = run("reference", x, output_final_state=True, use_qk_l2norm_in_kernel=l2norm, scale=0.7)
    torch.testing.assert_close(o, want_o, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(state, want_state, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("state_dtype", [torch.float64, torch.float32], ids=["own-dtype", "converted"])
def test_one_token_in_place_updates_the_given_state(state_dtype):
    """The decode step's form (kernelize owns the cache's state): ``inplace=True`` makes a state already in the
    compute dtype the new state, in place; a state that must be converted is a copy, the caller's left as it was.
    Both equal the reference, grouped heads (H=2 serving HV=4) and B=2."""
    from sp_kernels.kernels.chunk_gated_delta_rule.recurrent import one_token

    x = make_inputs(2, 1, 2, 4, 8, 8, n_states=2, seed=23)
    state = x["initial_state"].to(state_dtype)
    before = state.clone()
    qk = torch.stack([x["q"][:, 0], x["k"][:, 0]], dim=1)  # [B, 2, H, K]
    with torch.no_grad():
        o, new = one_token(qk, x["v"].reshape(2, 2, 2, 8), x["g"].reshape(2, 2, 2, 1).exp(),
                           x["beta"].reshape(2, 2, 2, 1), 0.7, state, True, torch.float64, inplace=True)
    ref = dict(x, initial_state=before.double())
    want_o, want_state, _ = run("reference", ref, output_final_state=True, use_qk_l2norm_in_kernel=True, scale=0.7)
    torch.testing.assert_close(o.reshape(2, 1, 4, 8), want_o, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(new.reshape(2, 4, 8, 8), want_state, atol=1e-12, rtol=1e-12)
    if state_dtype == torch.float64:
        assert new.data_ptr() == state.data_ptr()
        torch.testing.assert_close(state, want_state, atol=1e-12, rtol=1e-12)
    else:
        assert new.data_ptr() != state.data_ptr()
        torch.testing.assert_close(state, before, atol=0, rtol=0)


def test_short_inputs_select_the_recurrent_path():
    from sp_kernels.dispatch import Context, detect, select
    from sp_kernels.kernels.chunk_gated_delta_rule.recurrent import MAX_T

    shapes = {"B": 1, "H": 2, "HV": 4, "K": 16, "V": 16}
    pick = {T: select(OP, Context(OP, detect(torch.device("cpu")), torch.float32, {**shapes, "T": T})).chosen.name
            for T in (1, MAX_T, MAX_T + 1)}
    assert pick == {1: "torch_recurrent", MAX_T: "torch_recurrent", MAX_T + 1: "torch"}
    assert select(OP, Context(OP, detect(torch.device("cpu")), torch.float32, shapes)).chosen.name == "torch"


@pytest.mark.parametrize("l2norm", [True, False], ids=["l2norm", "no-l2norm"])
def test_fast_decays_as_a_real_model_makes_them(l2norm):
    """Qwen3.5's gates reach g = -50 per token (A = exp(A_log) up to 16, softplus(a + dt_bias)): within a chunk the
    cumulated decays fall far below float32's normal range. The float32 chunked path drops decays below exp(-30)
    (they would be subnormal, and slow) — its output and gradients still match the float64 reference."""
    inputs = make_inputs(1, 150, 2, 4, 16, 16, l2norm=l2norm, n_states=1, seed=23)
    gen = torch.Generator().manual_seed(24)
    A = torch.empty(4, dtype=torch.float64).uniform_(1, 16, generator=gen)
    inputs["g"] = -A * F.softplus(torch.randn(1, 150, 4, generator=gen, dtype=torch.float64) * 2 + 1)
    assert inputs["g"].min() < -30
    kw = dict(output_final_state=True, use_qk_l2norm_in_kernel=l2norm)
    want = run("reference", inputs, **kw)
    assert_parity(run("torch", inputs, **kw), want, atol=1e-9, rtol=1e-9)  # float64 keeps every decay
    inputs32 = {n: x.float() for n, x in inputs.items()}
    got = run("torch", inputs32, **kw)
    assert_parity(got, want, atol=2e-4, rtol=2e-4)
    from sp_kernels.kernels.chunk_gated_delta_rule import chunk_autograd

    for x in (got[0], got[1], *got[2].values()):
        assert not ((x != 0) & (x.abs() < torch.finfo(torch.float32).tiny)).any()
    assert chunk_autograd._decay_exp(torch.tensor([-31.0, -29.0, 0.0])).tolist() == [0.0, pytest.approx(2.54e-13, rel=1e-2), 1.0]
