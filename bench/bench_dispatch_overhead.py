"""What dispatch costs per call: the public op (validation + selection), a kernelized module's binding lookup,
and the chosen implementation called directly — on tensors small enough that the overhead shows."""
import pytest
import torch

from bench.common import DEVICE, implementations, leaf
import sp_kernels

D, W, T = 64, 4, 16


@pytest.mark.parametrize("how", ["direct", "kernelize-binding", "public-op"])
def test_dispatch_overhead(benchmark, how):
    from sp_kernels.dispatch import detect
    from sp_kernels._contexts import LayerContext
    from sp_kernels.kernelize.bindings import OpBinding

    benchmark.group = "dispatch overhead (causal_conv1d, tiny tensors)"
    gen = torch.Generator().manual_seed(0)
    x, w = leaf(1, T, D, dtype=torch.float32, gen=gen), leaf(D, W, dtype=torch.float32, gen=gen)
    x, w = x.detach(), w.detach()
    fn = implementations("causal_conv1d")["torch"].fn
    profile = detect(DEVICE)
    binding = OpBinding.create("causal_conv1d", LayerContext("causal_conv1d", profile, torch.float32,
                                                             {"D": D, "W": W}, {}, 1, False), "torch")
    calls = {
        "direct": lambda: fn(x, w, None, "silu", None, False, None),
        "kernelize-binding": lambda: binding.fn(packed=False, T=T)(x, w, None, "silu", None, False, None),
        "public-op": lambda: sp_kernels.causal_conv1d(x, w, activation="silu"),
    }
    benchmark(calls[how])
