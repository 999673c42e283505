"""causal_conv1d: forward and forward+backward, D=8192 W=4 silu (Qwen3.5's conv width), sequence sweep."""
import pytest
import torch

from bench.common import DTYPES, QUICK, candidates, fwd_bwd, implementations, leaf, run_case, transformers_fn

D, W = (512, 4) if QUICK else (8192, 4)
LENGTHS = [256] if QUICK else [1024, 2048, 8192]


def call(name):
    if name == "transformers":
        fn = transformers_fn("causal_conv1d_fn")  # takes [B, D, T], as transformers' GatedDeltaNet passes it
        return lambda x, w: fn(x.transpose(1, 2), w, None, activation="silu")
    impl = implementations("causal_conv1d")[name].fn
    return lambda x, w: impl(x, w, None, "silu", None, False, None)


def moved(T, dtype, backward):
    elem = DTYPES[dtype].itemsize
    return T * D * elem * (2 if not backward else 6)  # x, y (+ dy, x again, dx, y for silu)


def shapes(T):
    """The registry's view of a case (what selection sees)."""
    return {"B": 1, "T": T, "D": D, "W": W}


CANDIDATES = candidates("causal_conv1d", shapes(LENGTHS[-1]), torch.float32, True)


def case(impl, T, dtype, backward):
    """The step to time and its roofline counts."""
    gen = torch.Generator().manual_seed(0)
    x, w = leaf(1, T, D, dtype=DTYPES[dtype], gen=gen), leaf(D, W, dtype=DTYPES[dtype], gen=gen, scale=0.5)
    return fwd_bwd(call(impl), (x, w), backward), dict(flops=2 * T * D * W * (3 if backward else 1),
                                                        bytes_moved=moved(T, dtype, backward))


@pytest.mark.parametrize("T", LENGTHS, ids=lambda t: f"T{t}")
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", CANDIDATES)
def test_causal_conv1d(benchmark, impl, T, dtype, backward):
    benchmark.group = f"causal_conv1d {dtype} {'fwd+bwd' if backward else 'fwd'}"
    step, counts = case(impl, T, dtype, backward)
    run_case(benchmark, step, **counts)
