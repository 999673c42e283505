"""Sequence parallelism at a real vocabulary: per-rank peak memory and time of a forward+backward with labels, and
the bytes each rank sends, for sp_size 1, 2 and 4 (gloo ranks on this machine).

Each case starts ``sp_size`` fresh processes. A rank builds a tiny Qwen3.5 (2 layers: a GatedDeltaNet and an
attention layer, hidden 128) with a large vocabulary, kernelizes it, notes its resident memory, runs a
forward+backward with labels and reads its peak resident memory (``ru_maxrss``): the growth is what the step adds.
A second step is timed. The bytes are what the all-to-alls send to other ranks in one forward (the backward
sends the same again), per GatedDeltaNet and per attention layer.

``test_gated_deltanet_sp_modes`` compares the two ways a GatedDeltaNet layer runs under SP — Ulysses (heads) and
context parallelism (state passing) — on a model of GatedDeltaNet layers only, at sp 2 and 4 and T from 4k to 32k:
bytes sent per rank per layer in a forward, the time of a forward+backward, and the per-rank memory growth.
"""
import json
import os
import resource
import socket
import tempfile
import time

import pytest
import torch

from bench.common import QUICK

V, T = (4096, 512) if QUICK else (32768, 4096)
SP_SIZES = [1, 2] if QUICK else [1, 2, 4]
CONFIG = dict(vocab_size=V, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
              layer_types=["linear_attention", "full_attention"], num_attention_heads=4, num_key_value_heads=4,
              head_dim=32, linear_num_key_heads=4, linear_num_value_heads=8, linear_key_head_dim=32,
              linear_value_head_dim=32)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


#: GatedDeltaNet layers only (no attention, whose cost is the same either way), a small vocabulary
GDN_CONFIG = {**CONFIG, "vocab_size": 1024, "num_hidden_layers": 2, "layer_types": ["linear_attention"] * 2}
GDN_T = [512] if QUICK else [4096, 8192, 16384, 32768]
GDN_SP = [2] if QUICK else [2, 4]


def _rank(rank: int, sp_size: int, port: int, out: str, config=None, T=T, gdn_sp=None) -> None:
    import torch.distributed as dist

    import sp_kernels
    from sp_kernels.demo import quiet_transformers_import, tiny_qwen3_5_config
    from sp_kernels.sp import comm

    torch.set_num_threads(1)
    if sp_size > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=sp_size)
    model = quiet_transformers_import()(tiny_qwen3_5_config(**(config or CONFIG)))
    sp_kernels.kernelize(model, sp_size=sp_size, gated_deltanet_sp=gdn_sp)
    V = model.config.vocab_size
    sent, layer = {}, ["loss"]
    for m in model.modules():
        if hasattr(m, "_sp_kernels"):
            m.register_forward_pre_hook(lambda mod, args, kind=m._sp_kernels.kind: layer.__setitem__(0, kind))
    exchange = comm._exchange

    def counting(send, sp):  # the bytes that leave this rank: all chunks but its own
        if torch.is_grad_enabled():
            sent[layer[0]] = sent.get(layer[0], 0) + send.numel() * send.element_size() * (sp.size - 1) // sp.size
        return exchange(send, sp)

    comm._exchange = counting
    ids = torch.randint(0, V, (1, T), generator=torch.Generator().manual_seed(0))
    before = _rss_bytes()
    model(input_ids=ids, labels=ids).loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    forward_bytes = dict(sent)
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    out_ = model(input_ids=ids, labels=ids)
    out_.loss.backward()
    seconds = time.perf_counter() - start
    layers = {kind: sum(getattr(m, "_sp_kernels", None) is not None and m._sp_kernels.kind == kind
                        for m in model.modules()) for kind in ("gated_deltanet", "attention")}
    result = dict(rank=rank, growth=peak - before, seconds=seconds, logits=list(out_.logits.shape),
                  bytes_per_layer={k: forward_bytes.get(k, 0) // max(n, 1) for k, n in layers.items()})
    with open(f"{out}.{rank}", "w") as f:
        json.dump(result, f)
    if sp_size > 1:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(sp_size: int, config=None, T=T, gdn_sp=None) -> list[dict]:
    """Start ``sp_size`` ranks; their results, one dict per rank."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank")
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        mp.spawn(_rank, args=(sp_size, _free_port(), out, config, T, gdn_sp), nprocs=sp_size, join=True)
        ranks = []
        for r in range(sp_size):
            with open(f"{out}.{r}") as f:
                ranks.append(json.load(f))
    return ranks


@pytest.mark.parametrize("sp_size", SP_SIZES)
def test_sp_memory(benchmark, sp_size):
    benchmark.group = f"sequence parallel fp32 fwd+bwd with labels, V={V} T={T}"
    ranks = []
    benchmark.pedantic(lambda: ranks.append(run(sp_size)), rounds=1, iterations=1)
    ranks = ranks[0]
    benchmark.extra_info["sp"] = dict(
        sp_size=sp_size, V=V, T=T, growth_bytes=max(r["growth"] for r in ranks),
        seconds=max(r["seconds"] for r in ranks), logits=ranks[0]["logits"],
        bytes_per_layer=ranks[0]["bytes_per_layer"])


@pytest.mark.parametrize("T", GDN_T, ids=[f"T{t}" for t in GDN_T])
@pytest.mark.parametrize("sp_size", GDN_SP)
@pytest.mark.parametrize("mode", ["ulysses", "context"])
def test_gated_deltanet_sp_modes(benchmark, mode, sp_size, T):
    benchmark.group = "GatedDeltaNet under SP: Ulysses vs context parallelism, fp32 fwd+bwd"
    ranks = []
    benchmark.pedantic(lambda: ranks.append(run(sp_size, GDN_CONFIG, T, mode)), rounds=1, iterations=1)
    ranks = ranks[0]
    benchmark.extra_info["sp_mode"] = dict(
        mode=mode, sp_size=sp_size, T=T, growth_bytes=max(r["growth"] for r in ranks),
        seconds=max(r["seconds"] for r in ranks), bytes_per_layer=ranks[0]["bytes_per_layer"]["gated_deltanet"])
