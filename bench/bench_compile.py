"""torch.compile: the step time of a kernelized model, eager and compiled (inductor, fullgraph=True), with the
compile time, next to what a user would otherwise run (the unpatched transformers model, eager and compiled).

A small Qwen3.5 (4 layers: 2 GatedDeltaNet + 2 attention, hidden 256), fp32, batch 1, forward+backward with labels.
The compile time is the first call's (trace + compile + run), measured once per case in a fresh dynamo state.
"""
import time

import pytest
import torch

import sp_kernels
from bench.common import QUICK

T = 256 if QUICK else 1024
CONFIG = dict(vocab_size=4096, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8,
              num_key_value_heads=2, head_dim=32, linear_num_key_heads=4, linear_num_value_heads=8,
              linear_key_head_dim=32, linear_value_head_dim=32, layer_types=["linear_attention", "full_attention"] * 2)
CASES = ["ours eager", "ours compiled", "transformers eager", "transformers compiled"]


def _model(kernelized: bool):
    from sp_kernels.demo import quiet_transformers_import, tiny_qwen3_5_config

    torch.manual_seed(0)
    model = quiet_transformers_import()(tiny_qwen3_5_config(**CONFIG))
    if kernelized:
        sp_kernels.kernelize(model)
    return model


@pytest.mark.parametrize("T", [T])
@pytest.mark.parametrize("impl", CASES)
def test_compiled_step(benchmark, impl, T):
    benchmark.group = f"model step fp32 fwd+bwd, Qwen3.5 4 layers hidden 256, T={T}"
    model = _model(impl.startswith("ours"))
    ids = torch.randint(0, CONFIG["vocab_size"], (1, T), generator=torch.Generator().manual_seed(0))
    fn = model
    torch._dynamo.reset()
    if impl.endswith("compiled"):
        fn = torch.compile(model, fullgraph=True)

    def step():
        model.zero_grad(set_to_none=True)
        fn(input_ids=ids, labels=ids).loss.backward()

    start = time.perf_counter()
    step()  # the first call: compiles (and warms the caches in eager)
    benchmark.extra_info["first_call_seconds"] = time.perf_counter() - start
    benchmark.pedantic(step, rounds=2 if QUICK else 5, iterations=1, warmup_rounds=1)
