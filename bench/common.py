"""Shared pieces of the microbenchmarks: inputs, the candidates per op, peak memory and the machine's ceilings.

A candidate is every implementation the registry would accept on this device for the case (forced by name), plus
``transformers``: the torch fallback a user would otherwise run.
"""
from __future__ import annotations

import inspect
import os
import sys
import time

import torch
import torch.nn.functional as F

# transformers binds its functions to fla at import when fla imports; on a CPU box those crash, and the baseline
# is transformers' own torch path: hide fla unless a GPU is here.
if not torch.cuda.is_available():
    sys.modules.setdefault("fla", None)

import sp_kernels  # noqa: E402,F401  (registers the implementations)
from sp_kernels.dispatch import detect, implementations  # noqa: E402

QUICK = os.environ.get("SP_KERNELS_BENCH_QUICK") == "1"
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
PROFILE = detect(DEVICE)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def chosen(op: str, shapes: dict, dtype: torch.dtype, grad: bool) -> str:
    """The implementation the registry selects for the case on this device."""
    from sp_kernels._contexts import choose

    return choose(op, DEVICE, shapes, dtype=dtype, grad=grad)


def candidates(op: str, shapes: dict, dtype: torch.dtype, grad: bool) -> list[str]:
    from sp_kernels._contexts import LayerContext

    ctx = LayerContext(op, PROFILE, dtype, shapes, {}, 1, grad)(False, None)
    names = [n for n, impl in implementations(op).items() if impl.selectable and impl.check(ctx)[0]]
    return sorted(names) + ["transformers"]


def transformers_fn(name: str):
    from transformers.models.qwen3_5 import modeling_qwen3_5 as qwen

    return inspect.unwrap(getattr(qwen, name))  # the torch path, not a hub / fla kernel


def peak_memory(fn) -> int:
    """Peak bytes allocated while ``fn`` runs (CUDA allocator stats; on CPU, replayed from the profiler's
    memory events)."""
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # self_ (not cpu_memory_usage, which also counts the op's children): each allocation / free counted once
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    current = peak = 0
    for event in events:
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def ceilings() -> dict:
    """This machine's measured fp32 matmul GFLOP/s and copy GB/s (best of 10), for the roofline lines."""
    n = 1024 if QUICK else 2048
    a = torch.randn(n, n, device=DEVICE)
    x = torch.randn(32 * 2**20 // 4 * (1 if QUICK else 4), device=DEVICE)
    y = torch.empty_like(x)
    flops, bw = 0.0, 0.0
    a @ a, y.copy_(x)  # warm-up
    for _ in range(10):  # best of 10: the machine's slow phases only ever lower a reading
        t = time.perf_counter()
        a @ a
        flops = max(flops, 2 * n**3 / (time.perf_counter() - t) / 1e9)
        t = time.perf_counter()
        y.copy_(x)
        bw = max(bw, 2 * x.numel() * 4 / (time.perf_counter() - t) / 1e9)
    return {"matmul_gflops": round(flops, 1), "copy_gbps": round(bw, 2)}


def run_case(benchmark, fn, *, flops: float = 0.0, bytes_moved: float = 0.0, rounds: int = 5):
    """Time ``fn`` with pytest-benchmark and record peak memory and the roofline numbers in ``extra_info``."""
    fn()  # warm-up (also compiles / allocates)
    benchmark.extra_info["peak_bytes"] = peak_memory(fn)
    benchmark.extra_info["flops"] = flops
    benchmark.extra_info["bytes"] = bytes_moved
    benchmark.pedantic(fn, rounds=1 if QUICK else rounds, warmup_rounds=0)


def fwd_bwd(call, inputs, backward: bool):
    def step():
        out = call(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        if backward:
            out.float().sum().backward()
            for t in inputs:
                t.grad = None
    return step


def leaf(*shape, dtype, gen, scale=1.0):
    return (torch.randn(*shape, generator=gen, dtype=torch.float32) * scale).to(DEVICE, dtype).requires_grad_()


def gdn_inputs(B, T, H, K, dtype, gen):
    q, k, v = (leaf(B, T, H, K, dtype=dtype, gen=gen) for _ in range(3))
    g = F.logsigmoid(torch.randn(B, T, H, generator=gen)).to(DEVICE, torch.float32).requires_grad_()
    beta = torch.rand(B, T, H, generator=gen).to(DEVICE, dtype).requires_grad_()
    return q, k, v, g, beta
