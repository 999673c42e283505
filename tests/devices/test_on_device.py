"""Every implementation registered for a device, run on that device against the float64 references.

Skipped where the device is absent (tests/conftest.py): on this project's CPU CI these paths are verified only
through selection, argument translation and the Triton interpreter. Run them where a GPU or an NPU is.
"""
import pytest
import torch
import torch.nn.functional as F

import sp_kernels
from sp_kernels.dispatch import Context, detect, implementations

CASES = {
    "chunk_gated_delta_rule": dict(B=1, T=100, H=2, HV=4, K=64, V=64),
    "causal_conv1d": dict(B=2, T=100, D=256, W=4),
    "apply_rotary_pos_emb": dict(B=2, T=50, H=4, HK=2, D=128, R=64),
    "fusion_attention": dict(B=2, TQ=50, TK=50, H=4, HKV=2, D=64, DV=64),
}


def inputs(op, s, device, dtype, gen):
    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device, dtype).requires_grad_()

    if op == "chunk_gated_delta_rule":
        g = F.logsigmoid(torch.randn(s["B"], s["T"], s["HV"], generator=gen, dtype=torch.float64))
        beta = torch.rand(s["B"], s["T"], s["HV"], generator=gen, dtype=torch.float64)
        return (r(s["B"], s["T"], s["H"], s["K"]), r(s["B"], s["T"], s["H"], s["K"]), r(s["B"], s["T"], s["HV"], s["V"]),
                g.to(device, dtype).requires_grad_(), beta.to(device, dtype).requires_grad_()), \
            dict(use_qk_l2norm_in_kernel=True)
    if op == "causal_conv1d":
        return (r(s["B"], s["T"], s["D"]), r(s["D"], s["W"])), dict(activation="silu")
    if op == "apply_rotary_pos_emb":
        angles = torch.randn(s["B"], s["T"], s["R"] // 2, generator=gen, dtype=torch.float64)
        cos, sin = (torch.cat([f(angles)] * 2, -1).to(device, dtype) for f in (torch.cos, torch.sin))
        return (r(s["B"], s["H"], s["T"], s["D"]), r(s["B"], s["HK"], s["T"], s["D"]), cos, sin), {}
    return (r(s["B"], s["TQ"], s["H"], s["D"]), r(s["B"], s["TK"], s["HKV"], s["D"]),
            r(s["B"], s["TK"], s["HKV"], s["DV"])), dict(causal=True)


PUBLIC = {"chunk_gated_delta_rule": sp_kernels.chunk_gated_delta_rule, "causal_conv1d": sp_kernels.causal_conv1d,
          "apply_rotary_pos_emb": sp_kernels.apply_rotary_pos_emb, "fusion_attention": sp_kernels.fusion_attention}


def first(out):
    return out[0] if isinstance(out, tuple) else out


def run_device(device_type):
    device = torch.device(device_type)
    profile = detect(device)
    checked = 0
    for op, shapes in CASES.items():
        for name, impl in implementations(op).items():
            if name == "reference" or device_type not in impl.device_types:
                continue
            ctx = Context(op, profile, torch.bfloat16, shapes, requires_grad=True)
            ok, why = impl.check(ctx)
            if not ok:
                print(f"skip {op}/{name}: {why}")
                continue
            gen = torch.Generator().manual_seed(0)
            args, kw = inputs(op, shapes, device, torch.bfloat16, gen)
            ref_args = [a.detach().double().cpu().requires_grad_() for a in args]
            out = first(PUBLIC[op](*args, **kw, impl=name))
            ref = first(PUBLIC[op](*ref_args, **kw, impl="reference"))
            torch.testing.assert_close(out.float().cpu(), ref.float(), rtol=3e-2, atol=3e-2, msg=f"{op}/{name}")
            grads = torch.autograd.grad(out.float().sum(), [a for a in args if a.requires_grad], allow_unused=True)
            ref_grads = torch.autograd.grad(ref.sum(), ref_args, allow_unused=True)
            for a, b in zip(grads, ref_grads):
                if a is not None and b is not None:
                    torch.testing.assert_close(a.float().cpu(), b.float(), rtol=5e-2, atol=5e-2, msg=f"{op}/{name}")
            checked += 1
    assert checked, f"no implementation ran on {device_type}"


@pytest.mark.cuda
def test_cuda_implementations_match_references():
    run_device("cuda")


@pytest.mark.npu
def test_npu_implementations_match_references():
    run_device("npu")
