"""The ops as torch.library custom ops: opcheck on every implementation that runs here, ordinary and packed."""
import pytest
import torch

import sp_kernels  # noqa: F401  (defines the ops)
from sp_kernels._library import LIBRARY
from sp_kernels.dispatch import implementations

F64 = torch.float64
CU = torch.tensor([0, 3, 4, 11])  # packed: 3, 1 and 7 tokens


def _leaf(*shape, gen, dtype=F64, scale=1.0):
    return (torch.randn(*shape, generator=gen, dtype=dtype) * scale).requires_grad_()


def cases(op: str, packed: bool, gen) -> tuple:
    """The op's custom-op arguments (without ``impl``) for a small call with fresh random inputs."""
    B, T = (1, 11) if packed else (2, 7)
    cu = CU if packed else None
    if op == "chunk_gated_delta_rule":
        H, HV, K, V = 1, 2, 4, 3
        N = 3 if packed else B
        g = (-torch.rand(B, T, HV, generator=gen, dtype=F64)).requires_grad_()
        beta = torch.rand(B, T, HV, generator=gen, dtype=F64).requires_grad_()
        return (_leaf(B, T, H, K, gen=gen), _leaf(B, T, H, K, gen=gen), _leaf(B, T, HV, V, gen=gen), g, beta,
                K**-0.5, _leaf(N, HV, K, V, gen=gen), True, cu, True)
    if op == "causal_conv1d":
        D, W = 5, 4
        N = 3 if packed else B
        return (_leaf(B, T, D, gen=gen), _leaf(D, W, gen=gen), _leaf(D, gen=gen), "silu", _leaf(N, D, W - 1, gen=gen),
                True, cu)
    if op == "apply_rotary_pos_emb":
        H, HK, D, R = 2, 1, 8, 4
        return (_leaf(B, H, T, D, gen=gen), _leaf(B, HK, T, D, gen=gen), _leaf(B, T, R, gen=gen),
                _leaf(B, T, R, gen=gen), 1)
    H, HKV, D = 2, 1, 4
    return (_leaf(B, T, H, D, gen=gen), _leaf(B, T, HKV, D, gen=gen), _leaf(B, T, HKV, D, gen=gen), True, D**-0.5, cu)


RUNNABLE = [(op, impl) for op in LIBRARY for impl in ("reference", "torch" if op != "fusion_attention" else "sdpa")]
RUNNABLE.append(("chunk_gated_delta_rule", "torch_recurrent"))  # the cases are short (T <= 11): decoding's path


@pytest.mark.parametrize("op,impl,packed", [(op, impl, packed) for op, impl in RUNNABLE for packed in (False, True)
                                             if not (packed and op == "apply_rotary_pos_emb")])  # rotary is per token
def test_opcheck(op, impl, packed):
    args = cases(op, packed, torch.Generator().manual_seed(0))
    torch.library.opcheck(LIBRARY[op].default, (*args, impl))


@pytest.mark.parametrize("op,impl", RUNNABLE)
def test_the_custom_op_equals_the_implementation_forward_and_backward(op, impl):
    gen = torch.Generator().manual_seed(1)
    args = cases(op, op != "apply_rotary_pos_emb", gen)
    custom = LIBRARY[op].default(*args, impl)
    assert_equals_implementation(op, impl, args, custom if isinstance(custom, tuple) else (custom,), gen)


def assert_equals_implementation(op, impl, args, custom, gen):
    """``custom`` (a library op's outputs on ``args``) equals the implementation run directly, forward and backward
    (random weights on the outputs)."""
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    eager = implementations(op)[impl].fn(*args)
    eager = eager if isinstance(eager, tuple) else (eager,)
    weights = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in eager]
    ge = torch.autograd.grad(sum((o * w).sum() for o, w in zip(eager, weights)), leaves)
    gc = torch.autograd.grad(sum((o * w).sum() for o, w in zip(custom, weights)), leaves)
    for a, b in zip(eager, custom):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    for a, b in zip(ge, gc):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


SPLIT = [(op, name) for op in LIBRARY for name, impl in implementations(op).items() if impl.residuals is not None]


def test_every_op_has_a_split_implementation_here():
    assert {op for op, _ in SPLIT} == set(LIBRARY)


@pytest.mark.parametrize("op,impl", SPLIT)
def test_opcheck_saving(op, impl):
    """``<op>_saving`` (the forward's residuals out, the implementation's own backward on them)."""
    args = cases(op, False, torch.Generator().manual_seed(2))
    torch.library.opcheck(LIBRARY[op].saving, (*args, impl))


@pytest.mark.parametrize("op,impl", SPLIT)
def test_the_saving_op_equals_the_implementation_forward_and_backward(op, impl):
    gen = torch.Generator().manual_seed(3)
    args = cases(op, False, gen)
    library_op = LIBRARY[op]
    out = library_op.saving(*args, impl)
    custom, residuals = tuple(out[: library_op.outputs]), out[-1]
    inputs = [a for a in args if isinstance(a, torch.Tensor)]
    assert not any(r.untyped_storage().data_ptr() == a.untyped_storage().data_ptr() for r in residuals for a in inputs)
    assert_equals_implementation(op, impl, args, custom, gen)


def test_the_delta_rule_saving_op_without_l2norm_equals_the_implementation():
    """Without l2norm the torch delta rule saves no l2norm factors: its residuals are still a list of tensors."""
    gen = torch.Generator().manual_seed(4)
    args = cases("chunk_gated_delta_rule", False, gen)[:-1] + (False,)  # use_qk_l2norm_in_kernel
    library_op = LIBRARY["chunk_gated_delta_rule"]
    torch.library.opcheck(library_op.saving, (*args, "torch"))
    custom = tuple(library_op.saving(*args, "torch")[: library_op.outputs])
    assert_equals_implementation("chunk_gated_delta_rule", "torch", args, custom, gen)
