"""chunk_gated_delta_rule forward+backward: our implementations vs transformers' torch fallback.

Run: python -m pytest bench/bench_gated_delta_rule.py --benchmark-only
(the full sweep, plots and roofline lines are issue 5's; this is the baseline comparison.)
"""
import inspect
import sys

import pytest
import torch
import torch.nn.functional as F

sys.modules.setdefault("fla", None)  # benchmark transformers' own torch path, not a fla kernel that needs a GPU

import kernels  # noqa: E402,F401  (registers the implementations)
from dispatch import implementations  # noqa: E402

SHAPES = [(1, 512, 4, 64), (1, 2048, 8, 128)]


def inputs(B, T, H, D, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, T, H, D, generator=gen, dtype=dtype, requires_grad=True) for _ in range(3))
    g = F.logsigmoid(torch.randn(B, T, H, generator=gen)).requires_grad_()
    beta = torch.rand(B, T, H, generator=gen, dtype=dtype).requires_grad_()
    return q, k, v, g, beta


def transformers_fallback():
    from transformers.models.qwen3_5 import modeling_qwen3_5

    fn = inspect.unwrap(modeling_qwen3_5.torch_chunk_gated_delta_rule)
    return lambda q, k, v, g, beta: fn(q, k, v, g=g, beta=beta, use_qk_l2norm_in_kernel=True)


def ours(name):
    fn = implementations("chunk_gated_delta_rule")[name].fn
    return lambda q, k, v, g, beta: fn(q, k, v, g, beta, scale=q.shape[-1] ** -0.5, initial_state=None,
                                       output_final_state=False, cu_seqlens=None, use_qk_l2norm_in_kernel=True)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-T{}-H{}-D{}".format(*s))
@pytest.mark.parametrize("impl", ["torch", "transformers"])
def test_fwd_bwd(benchmark, impl, shape):
    run = transformers_fallback() if impl == "transformers" else ours(impl)
    args = inputs(*shape)
    benchmark.group = f"chunk_gated_delta_rule fwd+bwd {shape}"

    def step():
        o, _ = run(*args)
        o.sum().backward()

    benchmark.pedantic(step, rounds=3, warmup_rounds=1)
