"""Decoding, as a user feels it: ms per generated token of greedy ``generate`` with a cache, kernelized vs the
unpatched transformers model (its torch path: fla hidden), in paired rounds.

A Qwen3.5-like model: 3 GatedDeltaNet + 1 attention layer, head dims 128, 4 key / 8 value heads (attention 8
query / 2 KV heads), vocabulary 4096, fp32, a 256-token prompt and 48 new tokens. A token's time is the interval
between two consecutive tokens reaching the streamer (the prefill is excluded); a run's figure is the median of its
intervals. Each round runs every model once (the order alternating between rounds); the ratio is the median of the
rounds' ratios (this machine's speed drifts between rounds, not within one), each side's figure the median of its
rounds. Both sides must produce the same tokens. The target: ours at most 0.8x transformers' ms/token.

Two bounds say how much of a token is ours to remove:
- **weights' floor**: every weight matrix read once per token, at the read bandwidth measured in the same run;
- **our ops free**: the kernelized model with its decode forwards (GatedDeltaNet, attention) reduced to their
  projections, as if the conv, the delta rule, the rotary embedding, attention and their glue cost nothing; what
  remains is transformers' code around them (norms, MLP, decoder layers, ``generate``) and the matmuls. Its tokens
  are meaningless; only its time is read.
"""
import contextlib
import statistics
import time

import pytest
import torch

import sp_kernels
from bench.common import QUICK

HIDDEN = [256] if QUICK else [256, 1024]
PROMPT, NEW = (64, 12) if QUICK else (256, 48)
ROUNDS = 1 if QUICK else 7
TARGET = 0.8  # ours / transformers ms per token, at most


def config(hidden: int) -> dict:
    return dict(vocab_size=4096, hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=4,
                num_attention_heads=8, num_key_value_heads=2, head_dim=128, linear_num_key_heads=4,
                linear_num_value_heads=8, linear_key_head_dim=128, linear_value_head_dim=128,
                layer_types=["linear_attention"] * 3 + ["full_attention"], use_cache=True)


def models(hidden: int):
    """(ours, transformers): the same weights, ours kernelized."""
    from sp_kernels.demo import quiet_transformers_import, tiny_qwen3_5_config

    cls = quiet_transformers_import()
    torch.manual_seed(0)
    reference = cls(tiny_qwen3_5_config(**config(hidden))).eval()
    ours = cls(tiny_qwen3_5_config(**config(hidden))).eval()
    ours.load_state_dict(reference.state_dict())
    sp_kernels.kernelize(ours)
    return ours, reference


class _Clock:
    """A ``generate`` streamer that notes when each token arrives (the first ``put`` is the prompt)."""

    def __init__(self):
        self.times = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass

    def per_token(self) -> float:
        """Median seconds between consecutive decoded tokens (the prefill's interval left out)."""
        t = self.times[1:]
        return statistics.median(b - a for a, b in zip(t, t[1:]))


def decode(model, ids) -> tuple[float, torch.Tensor]:
    clock = _Clock()
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, streamer=clock)
    return clock.per_token(), out


@contextlib.contextmanager
def ops_free(model):
    """``model`` (kernelized) with each one-token forward of its GatedDeltaNet and attention modules reduced to
    their projections (their output: ``out_proj`` / ``o_proj`` of zeros); longer inputs (the prefill) run as they
    are. Restored on exit."""
    def gated_deltanet(module, forward):
        def free(hidden_states, *args, **kwargs):
            if hidden_states.shape[1] != 1:
                return forward(hidden_states, *args, **kwargs)
            module._sp_kernels.project(module, hidden_states)
            return module.out_proj(hidden_states.new_zeros(*hidden_states.shape[:2], module.out_proj.in_features))
        return free

    def attention(module, forward):
        def free(hidden_states, *args, **kwargs):
            if hidden_states.shape[1] != 1:
                return forward(hidden_states, *args, **kwargs)
            module.q_proj(hidden_states), module.k_proj(hidden_states), module.v_proj(hidden_states)
            return module.o_proj(hidden_states.new_zeros(*hidden_states.shape[:2], module.o_proj.in_features)), None
        return free

    kernelized = {m: m.forward for m in model.modules() if getattr(m, "_sp_kernels", None) is not None}
    for m, forward in kernelized.items():
        m.forward = (gated_deltanet if m._sp_kernels.kind == "gated_deltanet" else attention)(m, forward)
    try:
        yield model
    finally:
        for m, forward in kernelized.items():
            m.forward = forward


def weights_floor(model) -> tuple[int, float]:
    """Bytes of the weight matrices a decoded token reads (every Linear once; the embedding is a lookup) and the
    read bandwidth measured now: streaming as many bytes of fresh matrices through ``F.linear``."""
    linears = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    nbytes = sum(w.numel() * w.element_size() for w in linears)
    copies = [w.detach().clone() for w in linears]
    x = {w.shape[1]: torch.randn(1, w.shape[1]) for w in copies}
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for w in copies:
            torch.nn.functional.linear(x[w.shape[1]], w)
        best = min(best, time.perf_counter() - start)
    return nbytes, best


@pytest.mark.parametrize("hidden", HIDDEN)
def test_decode(benchmark, hidden):
    benchmark.group = "decode ms/token"
    ours, reference = models(hidden)
    free = models(hidden)[0]
    ids = torch.randint(0, 4096, (1, PROMPT), generator=torch.Generator().manual_seed(0))
    sides = {"ours": ours, "transformers": reference, "ops_free": free}
    times, tokens = {name: [] for name in sides}, {}
    with ops_free(free):
        for model in sides.values():  # warm-up
            decode(model, ids)
        for r in range(ROUNDS):
            for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                seconds, tokens[name] = decode(sides[name], ids)
                times[name].append(seconds)
    ratio = {name: statistics.median(a / b for a, b in zip(times[name], times["transformers"])) for name in sides}
    nbytes, floor = weights_floor(reference)
    benchmark.extra_info["model"] = {
        "kind": "decode", "hidden": hidden, "T": PROMPT, "new_tokens": NEW, "rounds": ROUNDS,
        "ours_s": statistics.median(times["ours"]), "transformers_s": statistics.median(times["transformers"]),
        "ratio": ratio["ours"], "ops_free_ratio": ratio["ops_free"], "target": TARGET,
        "same_tokens": bool(torch.equal(tokens["ours"], tokens["transformers"])),
        "weights_bytes": nbytes, "weights_floor_s": floor,
    }
    assert torch.equal(tokens["ours"], tokens["transformers"]), "kernelized decoding changed the tokens"
    benchmark.pedantic(decode, args=(ours, ids), rounds=1, warmup_rounds=0)
