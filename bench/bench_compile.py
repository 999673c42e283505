"""torch.compile: the training step of a kernelized model, eager and compiled (inductor, fullgraph=True), next to
what a user would otherwise run (the unpatched transformers model, compiled), with the compile time and how many
times each of our ops' forwards ran in a compiled step.

A small Qwen3.5 (4 layers: 2 GatedDeltaNet + 2 attention, hidden 256), fp32, batch 1, forward+backward with labels,
at T=1024 and T=4096. Gates like a trained model's, fast decays: ``A = exp(A_log)`` drawn from U(1, 16) (the upper
end of transformers' init range; the per-token decay ``exp(-A softplus(a + dt_bias))`` is 0.27 down to 1e-9 at a = 0).
The cases are compiled first (the first call — trace, compile, run, with inductor's caches disabled — is the
compile time), then timed in paired rounds, their order alternating; the medians are reported. Targets:
ours compiled at most 0.9x ours eager and at most 0.8x transformers compiled at T=4096; each op's forward once
per layer in a compiled step.
"""
import copy
import math
import statistics
import time

import pytest
import torch

import sp_kernels
from sp_kernels import _library
from bench.common import QUICK

LENGTHS = [256] if QUICK else [1024, 4096]
ROUNDS = 2 if QUICK else 15
CONFIG = dict(vocab_size=4096, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8,
              num_key_value_heads=2, head_dim=32, linear_num_key_heads=4, linear_num_value_heads=8,
              linear_key_head_dim=32, linear_value_head_dim=32, layer_types=["linear_attention", "full_attention"] * 2)
TARGETS = {"vs_eager": 0.9, "vs_transformers_compiled": 0.8}  # at T=4096


def _fast_decays(model) -> None:
    gen = torch.Generator().manual_seed(1)
    for module in model.modules():
        if hasattr(module, "A_log") and hasattr(module, "dt_bias"):
            with torch.no_grad():
                module.A_log.copy_(torch.empty_like(module.A_log).uniform_(1, 16, generator=gen).log())
                module.dt_bias.fill_(1.0)


def _model():
    from sp_kernels.demo import quiet_transformers_import, tiny_qwen3_5_config

    torch.manual_seed(0)
    model = quiet_transformers_import()(tiny_qwen3_5_config(**CONFIG))
    _fast_decays(model)
    return model


@pytest.mark.parametrize("T", LENGTHS)
def test_compiled_step(benchmark, T):
    benchmark.group = f"model step fp32 fwd+bwd, Qwen3.5 4 layers hidden 256, fast decays, T={T}"
    base = _model()
    ours = copy.deepcopy(base)
    sp_kernels.kernelize(ours)
    ids = torch.randint(0, CONFIG["vocab_size"], (1, T), generator=torch.Generator().manual_seed(0))
    cases = {"ours eager": (ours, ours), "transformers eager": (base, base)}
    first, runs = {}, {}
    for name, model in (("ours compiled", copy.deepcopy(ours)), ("transformers compiled", copy.deepcopy(base))):
        torch._dynamo.reset()
        cases[name] = (model, torch.compile(model, fullgraph=True))
    steps = {}
    for name, (model, fn) in cases.items():
        def step(model=model, fn=fn):
            model.zero_grad(set_to_none=True)
            fn(input_ids=ids, labels=ids).loss.backward()

        start = time.perf_counter()
        with torch._inductor.config.patch(force_disable_caches=True):  # a cold compile, not a cache hit
            step()  # compiled: trace, compile, run
        first[name] = time.perf_counter() - start
        _library.FORWARD_RUNS.clear()
        step()
        runs[name] = dict(_library.FORWARD_RUNS)
        steps[name] = step
    times = {name: [] for name in steps}
    for r in range(ROUNDS):  # paired rounds, the order alternating
        for name in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    benchmark.extra_info["compile"] = {
        "T": T, "rounds": ROUNDS, "seconds": med, "first_call_seconds": first,
        "forward_runs": runs["ours compiled"], "layers": sum(1 for m in ours.modules() if hasattr(m, "_sp_kernels")),
        "vs_eager": statistics.median(a / b for a, b in zip(times["ours compiled"], times["ours eager"])),
        "vs_transformers_compiled": statistics.median(
            a / b for a, b in zip(times["ours compiled"], times["transformers compiled"])),
        "targets": TARGETS if T == 4096 else None,
    }
    benchmark.pedantic(steps["ours compiled"], rounds=1, warmup_rounds=0)
