"""apply_rotary_pos_emb at Qwen3.5 shapes (16 query / 2 KV heads of 256, partial rotary 64)."""
import pytest
import torch

from bench.common import DEVICE, DTYPES, QUICK, candidates, fwd_bwd, implementations, leaf, run_case, transformers_fn

H, HK, D, R = (4, 2, 64, 16) if QUICK else (16, 2, 256, 64)
LENGTHS = [128] if QUICK else [2048, 8192]


def call(name):
    fn = transformers_fn("apply_rotary_pos_emb") if name == "transformers" else \
        implementations("apply_rotary_pos_emb")[name].fn
    return lambda q, k, cos, sin: torch.cat([t.flatten() for t in fn(q, k, cos, sin, unsqueeze_dim=1)])


def shapes(T):
    """The registry's view of a case (what selection sees)."""
    return {"B": 1, "T": T, "H": H, "HK": HK, "D": D, "R": R}


CANDIDATES = candidates("apply_rotary_pos_emb", shapes(LENGTHS[-1]), torch.float32, True)


def case(impl, T, dtype, backward):
    """The step to time and its roofline counts."""
    gen = torch.Generator().manual_seed(0)
    q, k = leaf(1, H, T, D, dtype=DTYPES[dtype], gen=gen), leaf(1, HK, T, D, dtype=DTYPES[dtype], gen=gen)
    angles = torch.randn(1, T, R // 2, generator=gen)
    cos, sin = (torch.cat([f(angles)] * 2, -1).to(DEVICE, DTYPES[dtype]) for f in (torch.cos, torch.sin))
    elem = DTYPES[dtype].itemsize
    step = fwd_bwd(lambda a, b: call(impl)(a, b, cos, sin), (q, k), backward)
    return step, dict(bytes_moved=2 * (H + HK) * T * D * elem * (3 if backward else 1))


@pytest.mark.parametrize("T", LENGTHS, ids=lambda t: f"T{t}")
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", CANDIDATES)
def test_rotary(benchmark, impl, T, dtype, backward):
    benchmark.group = f"apply_rotary_pos_emb {dtype} {'fwd+bwd' if backward else 'fwd'}"
    step, counts = case(impl, T, dtype, backward)
    run_case(benchmark, step, **counts)
