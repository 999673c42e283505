"""Paired ratios for the README's targets (fp32 forward+backward at T=2048): the implementation the registry picks
and transformers' torch fallback are timed alternately inside one case, best of ``ROUNDS`` each, so a slow phase of
a noisy machine slows both sides alike (separate cases can land in different phases)."""
import time

import pytest
import torch

from bench import bench_causal_conv1d, bench_fusion_attention, bench_gated_delta_rule, bench_rotary
from bench.common import DEVICE, QUICK, implementations

OPS = {"chunk_gated_delta_rule": bench_gated_delta_rule, "causal_conv1d": bench_causal_conv1d,
       "rotary": bench_rotary, "fusion_attention": bench_fusion_attention}
ROUNDS = 1 if QUICK else 7


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


@pytest.mark.parametrize("op", list(OPS))
def test_paired(benchmark, op):
    module = OPS[op]
    ours = max((n for n in module.CANDIDATES if n != "transformers"), key=lambda n: implementations(op)[n].priority)
    T = module.LENGTHS[0] if QUICK else 2048
    steps = {"ours": module.case(ours, T, "fp32", True)[0], "transformers": module.case("transformers", T, "fp32",
                                                                                          True)[0]}
    best = {name: _timed(fn) for name, fn in steps.items()}  # warm-up, kept only if never beaten
    for _ in range(ROUNDS):
        for name, fn in steps.items():
            best[name] = min(best[name], _timed(fn))
    benchmark.group = "paired fp32 fwd+bwd"
    benchmark.extra_info["paired"] = {"op": op, "impl": ours, "T": T, "ours_s": best["ours"],
                                      "transformers_s": best["transformers"], "rounds": ROUNDS}
    benchmark.pedantic(steps["ours"], rounds=1, warmup_rounds=0)


def test_paired_scaling(benchmark):
    """chunk_gated_delta_rule forward+backward at T=1024 and T=8192 alternated: the cost of 8x the length."""
    module, op = bench_gated_delta_rule, "chunk_gated_delta_rule"
    ours = max((n for n in module.CANDIDATES if n != "transformers"), key=lambda n: implementations(op)[n].priority)
    short, long = (module.LENGTHS[0], 8 * module.LENGTHS[0]) if QUICK else (1024, 8192)
    steps = {short: module.case(ours, short, "fp32", True)[0], long: module.case(ours, long, "fp32", True)[0]}
    best = {T: _timed(fn) for T, fn in steps.items()}
    for _ in range(ROUNDS):
        for T, fn in steps.items():
            best[T] = min(best[T], _timed(fn))
    benchmark.group = "paired scaling"
    benchmark.extra_info["paired_scaling"] = {"op": op, "impl": ours, "short": short, "long": long,
                                              "short_s": best[short], "long_s": best[long], "rounds": ROUNDS}
    benchmark.pedantic(steps[short], rounds=1, warmup_rounds=0)
