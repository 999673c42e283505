"""chunk_gated_delta_rule: forward and forward+backward, Qwen3.5-like heads, sequence sweep, fp32 / bf16."""
import pytest
import torch

from bench.common import (DTYPES, QUICK, candidates, fwd_bwd, gdn_inputs, implementations, run_case,
                          transformers_fn)

H, K = (2, 32) if QUICK else (8, 128)
LENGTHS = [256] if QUICK else [1024, 2048, 8192]
def shapes(T):
    """The registry's view of a case (what selection sees)."""
    return {"B": 1, "T": T, "H": H, "HV": H, "K": K, "V": K}


SHAPES = [shapes(T) for T in LENGTHS]


def flops(T, backward):
    C = 64  # chunk: intra-chunk [C, C] products, state [K, V] reads / writes per chunk
    forward = 2 * H * T * (3 * C * K + 4 * K * K) + 2 * H * T * C * K
    return forward * (3 if backward else 1)


def call(name):
    if name == "transformers":
        fn = transformers_fn("torch_chunk_gated_delta_rule")
        return lambda q, k, v, g, b: fn(q, k, v, g=g, beta=b, use_qk_l2norm_in_kernel=True)
    impl = implementations("chunk_gated_delta_rule")[name].fn
    return lambda q, k, v, g, b: impl(q, k, v, g, b, scale=K**-0.5, initial_state=None, output_final_state=False,
                                      cu_seqlens=None, use_qk_l2norm_in_kernel=True)


CANDIDATES = sorted({n for s in SHAPES for n in candidates(
    "chunk_gated_delta_rule", s, torch.float32, True)} | {"transformers"})


def case(impl, T, dtype, backward):
    """The step to time and its roofline counts."""
    gen = torch.Generator().manual_seed(0)
    inputs = gdn_inputs(1, T, H, K, DTYPES[dtype], gen)
    return fwd_bwd(call(impl), inputs, backward), dict(flops=flops(T, backward))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"T{s['T']}")
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", CANDIDATES)
def test_chunk_gated_delta_rule(benchmark, impl, shape, dtype, backward):
    benchmark.group = f"chunk_gated_delta_rule {dtype} {'fwd+bwd' if backward else 'fwd'}"
    step, counts = case(impl, shape["T"], dtype, backward)
    run_case(benchmark, step, **counts)
