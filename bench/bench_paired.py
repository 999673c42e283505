"""Paired ratios for the README's targets (fp32 forward+backward): two steps timed alternately inside one case,
best of ``ROUNDS`` each, so a slow phase of a noisy machine slows both sides alike (separate cases can land in
different phases). ``test_paired``: the implementation the registry picks vs transformers' torch fallback at
T=2048; ``test_paired_scaling``: our chunk_gated_delta_rule at T=1024 vs T=8192."""
import time

import pytest
import torch

from bench import bench_causal_conv1d, bench_fusion_attention, bench_chunk_gated_delta_rule, bench_apply_rotary_pos_emb
from bench.common import DEVICE, QUICK, chosen

OPS = {"chunk_gated_delta_rule": bench_chunk_gated_delta_rule, "causal_conv1d": bench_causal_conv1d,
       "apply_rotary_pos_emb": bench_apply_rotary_pos_emb, "fusion_attention": bench_fusion_attention}
ROUNDS = 1 if QUICK else 7


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _alternate(steps: dict) -> dict:
    """Best time of each step, the steps run in turn ``ROUNDS`` times (the first, warm-up pass counts too)."""
    best = {key: _timed(fn) for key, fn in steps.items()}
    for _ in range(ROUNDS):
        for key, fn in steps.items():
            best[key] = min(best[key], _timed(fn))
    return best


def _ours(op: str, T: int) -> str:
    return chosen(op, OPS[op].shapes(T), torch.float32, True)


@pytest.mark.parametrize("op", list(OPS))
def test_paired(benchmark, op):
    module = OPS[op]
    T = module.LENGTHS[0] if QUICK else 2048
    ours = _ours(op, T)
    steps = {"ours": module.case(ours, T, "fp32", True)[0],
             "transformers": module.case("transformers", T, "fp32", True)[0]}
    best = _alternate(steps)
    benchmark.group = "paired fp32 fwd+bwd"
    benchmark.extra_info["paired"] = {"op": op, "impl": ours, "T": T, "ours_s": best["ours"],
                                      "transformers_s": best["transformers"], "rounds": ROUNDS}
    benchmark.pedantic(steps["ours"], rounds=1, warmup_rounds=0)


def test_paired_scaling(benchmark):
    op, module = "chunk_gated_delta_rule", bench_chunk_gated_delta_rule
    short, long = (module.LENGTHS[0], 8 * module.LENGTHS[0]) if QUICK else (1024, 8192)
    ours = _ours(op, long)
    steps = {T: module.case(ours, T, "fp32", True)[0] for T in (short, long)}
    best = _alternate(steps)
    benchmark.group = "paired scaling"
    benchmark.extra_info["paired_scaling"] = {"op": op, "impl": ours, "short": short, "long": long,
                                              "short_s": best[short], "long_s": best[long], "rounds": ROUNDS}
    benchmark.pedantic(steps[short], rounds=1, warmup_rounds=0)
