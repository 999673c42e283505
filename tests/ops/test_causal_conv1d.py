"""causal_conv1d: torch implementation vs the float64 reference (forward and backward), packing, transformers."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sp_kernels import dispatch
from sp_kernels import causal_conv1d
from sp_kernels.kernels.causal_conv1d.api import OP

F64 = torch.float64


def _randn(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64)


def _inputs(B, T, D, W, *, bias=True, state=False, n=None, seed=0):
    n = B if n is None else n
    return {
        "x": _randn(B, T, D, seed=seed),
        "weight": _randn(D, W, seed=seed + 1) / W**0.5,
        "bias": _randn(D, seed=seed + 2) if bias else None,
        "initial_state": _randn(n, D, W - 1, seed=seed + 3) if state else None,
    }


def _run(impl, dtype, inputs, seed=100, **kw):
    """Forward + backward through the public API in ``dtype``; everything returned in float64.

    The loss is a random (fixed-seed) projection of every output, so each gradient is exercised.
    """
    leaves = {k: (None if t is None else t.detach().to(dtype).requires_grad_(True)) for k, t in inputs.items()}
    y, final = causal_conv1d(**leaves, impl=impl, **kw)
    assert y.dtype == dtype
    outs = [y] + ([final] if final is not None else [])
    loss = sum((o.to(F64) * _randn(*o.shape, seed=seed + i)).sum() for i, o in enumerate(outs))
    names = [k for k, t in leaves.items() if t is not None]
    # (materialised zeros: with no token at all some inputs are legitimately unused)
    grads = torch.autograd.grad(loss, [leaves[k] for k in names], allow_unused=True, materialize_grads=True)
    return (
        [o.detach().to(F64) for o in outs],
        {k: g.to(F64) for k, g in zip(names, grads)},
        final,
    )


def _assert_close(a, b, tol):
    outs_a, grads_a, _ = a
    outs_b, grads_b, _ = b
    assert len(outs_a) == len(outs_b)
    for oa, ob in zip(outs_a, outs_b):
        torch.testing.assert_close(oa, ob, atol=tol, rtol=tol)
    assert grads_a.keys() == grads_b.keys()
    for k in grads_a:
        torch.testing.assert_close(grads_a[k], grads_b[k], atol=tol, rtol=tol, msg=lambda m, k=k: f"grad {k}: {m}")


SHAPES = [
    # B, T, D, W
    (2, 7, 5, 4),  # odd T
    (2, 6, 6, 4),  # T == D
    (3, 1, 5, 4),  # T = 1
    (2, 2, 3, 4),  # T < W - 1: the final state takes initial-state columns
    (1, 9, 4, 2),
    (2, 5, 3, 1),  # W = 1: empty states
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}D{}W{}".format(*s))
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("state", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"])
def test_torch_matches_reference(shape, activation, state, dtype, tol):
    B, T, D, W = shape
    inputs = _inputs(B, T, D, W, state=state, seed=sum(shape))
    ref = _run("reference", F64, inputs, activation=activation, output_final_state=True)
    got = _run("torch", dtype, inputs, activation=activation, output_final_state=True)
    _assert_close(got, ref, tol)


def test_without_bias_and_swish_is_silu():
    inputs = _inputs(2, 5, 4, 3, bias=False, state=True)
    ref = _run("reference", F64, inputs, activation="silu", output_final_state=True)
    got = _run("torch", F64, inputs, activation="swish", output_final_state=True)
    _assert_close(got, ref, 1e-10)


def test_final_state_definition():
    """The final state is literally the last W-1 inputs (from initial_state when the sequence is short)."""
    W = 4
    inputs = _inputs(2, 5, 3, W, state=True)
    _, final = causal_conv1d(**inputs, output_final_state=True, impl="torch")
    torch.testing.assert_close(final, inputs["x"][:, -(W - 1) :].transpose(1, 2), atol=0, rtol=0)
    short = _inputs(2, 1, 3, W, state=True)
    _, final = causal_conv1d(**short, output_final_state=True, impl="torch")
    expected = torch.cat([short["initial_state"][..., 1:], short["x"].transpose(1, 2)], dim=-1)
    torch.testing.assert_close(final, expected, atol=0, rtol=0)


def test_final_state_none_unless_requested_and_dtype():
    inputs = {k: (None if t is None else t.to(torch.bfloat16)) for k, t in _inputs(1, 4, 3, 4, state=True).items()}
    y, final = causal_conv1d(**inputs)
    assert final is None and y.dtype == torch.bfloat16
    y, final = causal_conv1d(**inputs, output_final_state=True)
    assert final.dtype == torch.bfloat16 and final.shape == (1, 3, 3)


@pytest.mark.parametrize("impl", ["torch", "reference"])
@pytest.mark.parametrize("state", [False, True], ids=["zero-state", "initial-state"])
def test_packed_equals_each_sequence_alone(impl, state):
    """Lengths include 0, 1 and 2 (< W - 1): every sequence starts from its own state row and sees no other."""
    lens = [3, 0, 1, 2, 6]
    D, W = 5, 4
    T = sum(lens)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)
    inputs = _inputs(1, T, D, W, state=state, n=len(lens), seed=7)
    packed = _run(impl, F64, inputs, activation="silu", output_final_state=True, cu_seqlens=cu)
    y, final = packed[0]
    for n, (s, e) in enumerate(zip(cu.tolist(), cu.tolist()[1:])):
        alone = dict(inputs, x=inputs["x"][:, s:e])
        if state:
            alone["initial_state"] = inputs["initial_state"][n : n + 1]
        y1, f1 = causal_conv1d(**alone, activation="silu", output_final_state=True, impl=impl)
        torch.testing.assert_close(y[:, s:e], y1, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(final[n : n + 1], f1, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"])
def test_packed_torch_matches_reference_backward(dtype, tol):
    lens = [4, 1, 0, 7, 2]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    inputs = _inputs(1, sum(lens), 6, 4, state=True, n=len(lens), seed=3)
    ref = _run("reference", F64, inputs, activation="silu", output_final_state=True, cu_seqlens=cu)
    got = _run("torch", dtype, inputs, activation="silu", output_final_state=True, cu_seqlens=cu)
    _assert_close(got, ref, tol)


@given(
    B=st.integers(1, 3),
    T=st.integers(1, 12),
    D=st.integers(1, 6),
    W=st.integers(1, 5),
    bias=st.booleans(),
    state=st.booleans(),
    activation=st.sampled_from([None, "silu"]),
    seed=st.integers(0, 2**16),
)
@settings(deadline=None, max_examples=15)
def test_hypothesis_shapes(B, T, D, W, bias, state, activation, seed):
    inputs = _inputs(B, T, D, W, bias=bias, state=state, seed=seed)
    ref = _run("reference", F64, inputs, activation=activation, output_final_state=True)
    got = _run("torch", F64, inputs, activation=activation, output_final_state=True)
    _assert_close(got, ref, 1e-10)


@given(lens=st.lists(st.integers(0, 6), min_size=1, max_size=4), W=st.integers(1, 5), seed=st.integers(0, 2**16))
@settings(deadline=None, max_examples=15)
def test_hypothesis_packed(lens, W, seed):
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    inputs = _inputs(1, sum(lens), 3, W, state=True, n=len(lens), seed=seed)
    ref = _run("reference", F64, inputs, activation="silu", output_final_state=True, cu_seqlens=cu)
    got = _run("torch", F64, inputs, activation="silu", output_final_state=True, cu_seqlens=cu)
    _assert_close(got, ref, 1e-10)


@pytest.mark.parametrize("tile", [1, 2, 3, 5, 7], ids=lambda t: f"tile{t}")
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("state", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"])
def test_torch_tiles_match_reference(monkeypatch, tile, activation, state, dtype, tol):
    """Many tiles on a small shape: boundaries inside the first W-1 rows (tile < W-1), T not a multiple of the tile,
    tiles shorter than the W-1 rows of right context (dpre) the backward carries from tile to tile."""
    from sp_kernels.kernels.causal_conv1d import torch_impl

    calls = []
    monkeypatch.setattr(torch_impl, "_tile_len", lambda row_bytes, W: calls.append(W) or tile)
    B, T, D, W = 2, 13, 3, 4
    for seed in (1, 2):  # fresh inputs each time
        inputs = _inputs(B, T, D, W, state=state, seed=100 * tile + seed)
        ref = _run("reference", F64, inputs, activation=activation, output_final_state=True)
        got = _run("torch", dtype, inputs, activation=activation, output_final_state=True)
        _assert_close(got, ref, tol)
    assert calls  # the tile length was used


@pytest.mark.parametrize("tile", [1, 2, 4])
def test_torch_tiles_packed_match_reference(monkeypatch, tile):
    from sp_kernels.kernels.causal_conv1d import torch_impl

    monkeypatch.setattr(torch_impl, "_tile_len", lambda row_bytes, W: tile)
    lens = [5, 1, 0, 9, 2]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    inputs = _inputs(1, sum(lens), 4, 4, state=True, n=len(lens), seed=tile)
    ref = _run("reference", F64, inputs, activation="silu", output_final_state=True, cu_seqlens=cu)
    got = _run("torch", F64, inputs, activation="silu", output_final_state=True, cu_seqlens=cu)
    _assert_close(got, ref, 1e-10)


@pytest.mark.parametrize("tile_bytes", [1, 8192])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 5e-2)], ids=["f32", "bf16"])
def test_torch_default_tile_len_matches_reference(monkeypatch, tile_bytes, dtype, tol):
    """The default tile length (at least W rows; 8 KiB = 8 rows of 2 x 128 float32), several tiles; bfloat16 inputs
    against the reference on the same (bf16-rounded) inputs."""
    from sp_kernels.kernels.causal_conv1d import torch_impl

    monkeypatch.setattr(torch_impl, "TILE_BYTES", tile_bytes)
    B, T, D, W = 2, 29, 128, 4
    inputs = {k: t.to(dtype).to(F64) for k, t in _inputs(B, T, D, W, state=True, seed=9).items()}
    ref = _run("reference", F64, inputs, activation="silu", output_final_state=True)
    got = _run("torch", dtype, inputs, activation="silu", output_final_state=True)
    _assert_close(got, ref, tol)


# --- what users use today: transformers' torch fallbacks ------------------------------------------------------


@pytest.mark.parametrize("activation", [None, "silu"])
def test_matches_transformers_causal_conv1d_fn(activation):
    from transformers.models.qwen3_5.modeling_qwen3_5 import causal_conv1d_fn

    causal_conv1d_fn = getattr(causal_conv1d_fn, "__wrapped__", causal_conv1d_fn)  # the torch path, not a hub kernel

    inputs = _inputs(2, 9, 6, 4, seed=11)
    expected = causal_conv1d_fn(inputs["x"].transpose(1, 2), inputs["weight"], inputs["bias"], activation=activation)
    y, _ = causal_conv1d(**inputs, activation=activation, impl="torch")
    torch.testing.assert_close(y, expected.transpose(1, 2), atol=1e-12, rtol=1e-12)


def test_state_conversion_with_transformers_causal_conv1d_update():
    """Decoding token by token with transformers' [B, D, W] cache state == one call from our [B, D, W-1] state."""
    from transformers.models.qwen3_5.modeling_qwen3_5 import causal_conv1d_update

    causal_conv1d_update = getattr(causal_conv1d_update, "__wrapped__", causal_conv1d_update)

    W = 4
    inputs = _inputs(2, 5, 3, W, state=True, seed=5)
    y, final = causal_conv1d(**inputs, activation="silu", output_final_state=True, impl="torch")
    conv_state = F.pad(inputs["initial_state"], (1, 0))  # ours -> transformers' [B, D, W]
    steps = []
    for t in range(inputs["x"].shape[1]):
        xt = inputs["x"][:, t : t + 1].transpose(1, 2)
        steps.append(causal_conv1d_update(xt, conv_state, inputs["weight"], inputs["bias"], "silu"))
    torch.testing.assert_close(y, torch.cat(steps, dim=-1).transpose(1, 2), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(final, conv_state[..., 1:], atol=0, rtol=0)  # transformers' -> ours


@pytest.mark.parametrize("bias, activation", [(True, "silu"), (False, None)], ids=["bias-silu", "plain"])
def test_decode_update_matches_reference(bias, activation):
    """Our one-token update on transformers' [B, D, W] cache, token by token == the float64 reference over the
    whole sequence from the same state; the cache ends holding the last W inputs."""
    from sp_kernels.kernels.causal_conv1d.update import causal_conv1d_update

    W = 4
    inputs = _inputs(2, 6, 5, W, bias=bias, state=True, seed=8)
    y, final = causal_conv1d(**inputs, activation=activation, output_final_state=True, impl="reference")
    conv_state = F.pad(inputs["initial_state"], (1, 0))
    steps = [causal_conv1d_update(inputs["x"][:, t], conv_state, inputs["weight"], inputs["bias"], activation)
             for t in range(inputs["x"].shape[1])]
    torch.testing.assert_close(torch.stack(steps, dim=1), y, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(conv_state[..., 1:], final, atol=0, rtol=0)
    torch.testing.assert_close(conv_state[..., 0], inputs["x"][:, -W], atol=0, rtol=0)


# --- dispatch -------------------------------------------------------------------------------------------------


def test_registered_and_default_selection():
    impls = dispatch.implementations(OP)
    assert {"reference", "torch"} <= impls.keys()
    assert not impls["reference"].selectable
    assert dispatch.preference(OP) == ('triton', 'fla', 'torch', 'reference')  # best first; the reference only when forced
    ctx = dispatch.Context(OP, dispatch.detect(torch.device("cpu")), shapes={"B": 1, "T": 4, "D": 3, "W": 4})
    assert dispatch.select(OP, ctx).chosen.name == "torch"


# --- bad input: every error names the argument ----------------------------------------------------------------


def _good(**changes):
    args = dict(_inputs(2, 5, 4, 3, state=True))
    args.update(changes)
    return args


def _call(**kw):
    impl = kw.pop("impl", None)
    return causal_conv1d(**kw, impl=impl)


def test_bad_x_rank():
    with pytest.raises(ValueError, match="x:"):
        _call(**_good(x=_randn(5, 4)))


def test_bad_x_type():
    with pytest.raises(TypeError, match="x:"):
        _call(**_good(x=[[1.0]]))


def test_bad_weight_rank():
    with pytest.raises(ValueError, match="weight:"):
        _call(**_good(weight=_randn(4, 1, 3)))


def test_bad_weight_channels():
    with pytest.raises(ValueError, match="weight:"):
        _call(**_good(weight=_randn(5, 3)))


def test_bad_weight_width_zero():
    with pytest.raises(ValueError, match="weight:"):
        _call(**_good(weight=_randn(4, 0), initial_state=None))


def test_bad_weight_dtype():
    with pytest.raises(TypeError, match="weight:"):
        _call(**_good(weight=_randn(4, 3).float()))


def test_bad_weight_device():
    with pytest.raises(ValueError, match="weight:"):
        _call(**_good(weight=torch.empty(4, 3, dtype=F64, device="meta")))


def test_bad_bias_shape():
    with pytest.raises(ValueError, match="bias:"):
        _call(**_good(bias=_randn(3)))


def test_bad_bias_dtype():
    with pytest.raises(TypeError, match="bias:"):
        _call(**_good(bias=_randn(4).float()))


def test_bad_bias_device():
    with pytest.raises(ValueError, match="bias:"):
        _call(**_good(bias=torch.empty(4, dtype=F64, device="meta")))


def test_bad_activation():
    with pytest.raises(ValueError, match="activation:"):
        _call(**_good(activation="relu"))


def test_bad_state_shape():
    with pytest.raises(ValueError, match="initial_state:"):
        _call(**_good(initial_state=_randn(2, 4, 3)))  # [N, D, W] (fla's layout) is not accepted


def test_bad_state_batch():
    with pytest.raises(ValueError, match="initial_state:"):
        _call(**_good(initial_state=_randn(3, 4, 2)))


def test_bad_state_rank():
    with pytest.raises(ValueError, match="initial_state:"):
        _call(**_good(initial_state=_randn(4, 2)))


def test_bad_state_dtype():
    with pytest.raises(TypeError, match="initial_state:"):
        _call(**_good(initial_state=_randn(2, 4, 2).float()))


def test_bad_state_device():
    with pytest.raises(ValueError, match="initial_state:"):
        _call(**_good(initial_state=torch.empty(2, 4, 2, dtype=F64, device="meta")))


def test_bad_output_final_state():
    with pytest.raises(TypeError, match="output_final_state:"):
        _call(**_good(output_final_state=1))


def _packed(cu, B=1, T=6):
    return _good(x=_randn(B, T, 4), initial_state=None, cu_seqlens=cu)


def test_bad_cu_seqlens_float():
    with pytest.raises(TypeError, match="cu_seqlens:"):
        _call(**_packed(torch.tensor([0.0, 6.0])))


def test_bad_cu_seqlens_not_1d():
    with pytest.raises(ValueError, match="cu_seqlens:"):
        _call(**_packed(torch.tensor([[0, 6]])))


def test_bad_cu_seqlens_start():
    with pytest.raises(ValueError, match="cu_seqlens:"):
        _call(**_packed(torch.tensor([1, 6])))


def test_bad_cu_seqlens_decreasing():
    with pytest.raises(ValueError, match="cu_seqlens:"):
        _call(**_packed(torch.tensor([0, 4, 2, 6])))


def test_bad_cu_seqlens_end():
    with pytest.raises(ValueError, match="cu_seqlens:"):
        _call(**_packed(torch.tensor([0, 2, 5])))


def test_bad_cu_seqlens_batch():
    with pytest.raises(ValueError, match="cu_seqlens:"):
        _call(**_packed(torch.tensor([0, 2, 6]), B=2))


def test_bad_packed_state_rows():
    with pytest.raises(ValueError, match="initial_state:"):
        _call(**dict(_packed(torch.tensor([0, 2, 6])), initial_state=_randn(1, 4, 2)))


def test_unknown_impl():
    with pytest.raises(ValueError, match="impl:"):
        _call(**_good(impl="no-such-kernel"))


def test_impl_not_a_str():
    with pytest.raises(TypeError, match="^impl: expected an implementation name .str., got int"):
        _call(**_good(impl=5))


def test_reference_is_never_auto_selected_but_can_be_forced():
    args = _good()
    y_auto, _ = causal_conv1d(**args)
    y_ref, _ = causal_conv1d(**args, impl="reference")
    torch.testing.assert_close(y_auto, y_ref, atol=1e-12, rtol=1e-12)


def test_implementations_called_directly_accept_swish():
    """kernelize calls the registered functions directly (no API normalisation): 'swish' must still mean SiLU."""
    inputs = _inputs(1, 6, 3, 4, state=True)
    for name, impl in dispatch.implementations(OP).items():
        if "cpu" not in impl.device_types:
            continue  # accelerator implementations (fla) take their activation names from their library
        y_swish, _ = impl.fn(**inputs, activation="swish")
        y_silu, _ = impl.fn(**inputs, activation="silu")
        torch.testing.assert_close(y_swish, y_silu, atol=0, rtol=0, msg=lambda m, name=name: f"{name}: {m}")
