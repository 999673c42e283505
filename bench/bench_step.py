"""A training step, as a user feels it: forward + backward with labels of the decode benchmark's model (hidden
1024, vocabulary 4096) at T=4096, kernelized vs the unpatched transformers model (its torch path), alternated in
paired rounds (the order alternating): the speed-up is the median of the rounds' ratios, each side's time the
median of its rounds.

The split of one more kernelized step says where its time goes: **ours** is the wall time inside the forward and
backward of our implementations' autograd Functions (the delta rule, the conv, the rotary embedding), **common** is
the rest (projections, MLP, head, attention, loss, autograd), the same with or without kernelize.
The target: at least 1.9x transformers.
"""
import contextlib
import functools
import statistics
import time

import pytest
import torch

from bench.bench_decode import models
from bench.common import QUICK

HIDDEN = 256 if QUICK else 1024
T = 512 if QUICK else 4096
ROUNDS = 1 if QUICK else 5
TARGET = 1.9  # transformers' step time / ours, at least


def _step(model, ids):
    def run():
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    return run


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _nodes():
    """Our implementations' autograd Functions on the CPU torch path."""
    from sp_kernels.kernels.causal_conv1d.torch_impl import _CausalConv
    from sp_kernels.kernels.chunk_gated_delta_rule.chunk_autograd import ChunkGatedDeltaRule
    from sp_kernels.kernels.apply_rotary_pos_emb.torch_impl import _Rotary

    return {"delta rule": ChunkGatedDeltaRule, "causal conv": _CausalConv, "apply_rotary_pos_emb": _Rotary}


@contextlib.contextmanager
def _clocked(split: dict):
    """Add the wall time of every forward and backward of our autograd Functions to ``split`` (a profiler's
    per-op overhead would inflate the many small ops of a chunked scan; four clock reads per call do not)."""
    saved = []
    for label, cls in _nodes().items():
        for phase in ("forward", "backward"):
            original = cls.__dict__[phase]  # the staticmethod
            fn = original.__func__

            def clocked(*args, fn=fn, key=f"{label} {phase}"):
                start = time.perf_counter()
                try:
                    return fn(*args)
                finally:
                    split[key] = split.get(key, 0.0) + time.perf_counter() - start

            clocked.__wrapped__ = fn
            saved.append((cls, phase, original))
            setattr(cls, phase, staticmethod(functools.wraps(fn)(clocked)))
    try:
        yield split
    finally:
        for cls, phase, original in saved:
            setattr(cls, phase, original)


def time_split(fn) -> dict:
    """Seconds of one step inside our autograd nodes (forward and backward of each) and in the rest."""
    with _clocked({}) as split:
        total = _timed(fn)
    ours = sum(split.values())
    return {"total_s": total, "ours_s": ours, "common_s": total - ours, "ours_by_node_s": split}


def test_training_step(benchmark):
    benchmark.group = "training step fwd+bwd"
    ours, reference = models(HIDDEN)
    ids = torch.randint(0, 4096, (1, T), generator=torch.Generator().manual_seed(0))
    steps = {"ours": _step(ours, ids), "transformers": _step(reference, ids)}
    for fn in steps.values():  # warm-up
        fn()
    times = {name: [] for name in steps}
    for r in range(ROUNDS):  # paired rounds, the order alternating
        for name in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
            times[name].append(_timed(steps[name]))
    benchmark.extra_info["model"] = {
        "kind": "step", "hidden": HIDDEN, "T": T, "rounds": ROUNDS, "ours_s": statistics.median(times["ours"]),
        "transformers_s": statistics.median(times["transformers"]), "target": TARGET,
        "speedup": statistics.median(b / a for a, b in zip(times["ours"], times["transformers"])),
        "profile": time_split(steps["ours"]),
    }
    benchmark.pedantic(steps["ours"], rounds=1, warmup_rounds=0)
