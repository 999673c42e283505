"""fusion_attention at Qwen3.5 shapes (16 query / 2 KV heads of 256), causal, vs transformers' SDPA path."""
from types import SimpleNamespace

import pytest
import torch

from bench.common import DTYPES, QUICK, candidates, fwd_bwd, implementations, leaf, run_case

H, HKV, D = (4, 2, 32) if QUICK else (16, 2, 256)
LENGTHS = [128] if QUICK else [1024, 2048]


def call(name):
    if name == "transformers":  # transformers' own sdpa_attention_forward, given [B, H, T, D] as its models do
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        module = SimpleNamespace(num_key_value_groups=H // HKV, is_causal=True)
        return lambda q, k, v: sdpa_attention_forward(
            module, q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, is_causal=True)[0]
    impl = implementations("fusion_attention")[name].fn
    return lambda q, k, v: impl(q, k, v, causal=True, scale=None, cu_seqlens=None)


def shapes(T):
    """The registry's view of a case (what selection sees)."""
    return {"B": 1, "TQ": T, "TK": T, "H": H, "HKV": HKV, "D": D, "DV": D}


CANDIDATES = candidates("fusion_attention", shapes(LENGTHS[-1]), torch.float32, True)


def case(impl, T, dtype, backward):
    """The step to time and its roofline counts."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (leaf(1, T, h, D, dtype=DTYPES[dtype], gen=gen) for h in (H, HKV, HKV))
    step = fwd_bwd(call(impl), (q, k, v), backward)
    return step, dict(flops=2 * H * T * T * D * (3.5 if backward else 1))  # causal: half of 2 matmuls of 2*T*T*D


@pytest.mark.parametrize("T", LENGTHS, ids=lambda t: f"T{t}")
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", CANDIDATES)
def test_fusion_attention(benchmark, impl, T, dtype, backward):
    benchmark.group = f"fusion_attention {dtype} {'fwd+bwd' if backward else 'fwd'}"
    step, counts = case(impl, T, dtype, backward)
    run_case(benchmark, step, **counts)
