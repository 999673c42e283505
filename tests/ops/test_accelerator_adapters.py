"""Argument translation of the accelerator adapters (torch_npu, flash-attn, fla, MindSpeed), checked on CPU.

The device libraries are replaced by CPU stand-ins that implement their documented semantics (npu_fusion_attention's
layouts, sparse modes and compressed mask; npu_rotary_mul's half mode; fla's half-width rotary), so each adapter's
translation is run end to end against our float64 references. The real kernels run in the device-marked tests.
"""
import sys
import types

import pytest
import torch

from sp_kernels.kernels.fusion_attention.adapters import npu as npu_attn
from sp_kernels.kernels.fusion_attention.adapters.flash_attn import varlen_args
from sp_kernels.kernels.fusion_attention.naive import attention_reference
from sp_kernels.kernels.chunk_gated_delta_rule.adapters import mindspeed
from sp_kernels.kernels.chunk_gated_delta_rule.naive import naive_recurrent_gated_delta_rule
from sp_kernels.kernels.apply_rotary_pos_emb.adapters import fla as fla_rotary
from sp_kernels.kernels.apply_rotary_pos_emb.adapters import npu as npu_rotary
from sp_kernels.kernels.apply_rotary_pos_emb.naive import rotary_reference

F64 = torch.float64


def fake_npu_fusion_attention(query, key, value, head_num, input_layout, scale=1.0, keep_prob=1.0, atten_mask=None,
                              sparse_mode=0, actual_seq_qlen=None, actual_seq_kvlen=None, **_):
    """npu_fusion_attention's documented semantics, explicit softmax (BSND / TND, sparse modes 0 and 3)."""
    assert keep_prob == 1.0 and head_num == query.shape[-2]
    if sparse_mode == 3:
        assert atten_mask is not None and atten_mask.shape == (2048, 2048)
        assert torch.equal(atten_mask, torch.ones(2048, 2048, dtype=torch.bool).triu(1))
    else:
        assert sparse_mode == 0 and atten_mask is None

    def attend(q, k, v):  # [S, N, D]
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        s = torch.einsum("qnd,knd->nqk", q, k) * scale
        if sparse_mode == 3:  # right-down causal
            sq, sk = q.shape[0], k.shape[0]
            s = s.masked_fill(torch.ones(sq, sk, dtype=torch.bool).triu(sk - sq + 1), float("-inf"))
        return torch.einsum("nqk,knd->qnd", s.softmax(-1), v)

    if input_layout == "BSND":
        out = torch.stack([attend(q, k, v) for q, k, v in zip(query, key, value)])
    else:
        assert input_layout == "TND" and actual_seq_qlen == actual_seq_kvlen
        bounds = [0, *actual_seq_qlen]
        out = torch.cat([attend(query[s:e], key[s:e], value[s:e]) for s, e in zip(bounds, bounds[1:])])
    return out, None, None, None, 0, 0, 0


def fake_npu_rotary_mul(x, r1, r2, rotary_mode="half"):
    assert rotary_mode == "half" and x.dim() == r1.dim() == 4
    x1, x2 = x.chunk(2, -1)
    return r1 * x + r2 * torch.cat((-x2, x1), -1)


@pytest.fixture
def fake_torch_npu(monkeypatch):
    module = types.SimpleNamespace(npu_fusion_attention=fake_npu_fusion_attention, npu_rotary_mul=fake_npu_rotary_mul)
    monkeypatch.setitem(sys.modules, "torch_npu", module)
    return module


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("causal", [True, False])
def test_npu_fusion_attention_translation(fake_torch_npu, packed, causal):
    gen = torch.Generator().manual_seed(1)
    B, T, H, HKV, D = (1, 23, 4, 2, 8) if packed else (2, 11, 4, 2, 8)
    q, k, v = (torch.randn(B, T, h, D, generator=gen, dtype=F64) for h in (H, HKV, HKV))
    cu = torch.tensor([0, 5, 6, 23]) if packed else None
    out = npu_attn.fusion_attention_npu(q, k, v, causal=causal, scale=0.3, cu_seqlens=cu)
    ref = attention_reference(q, k, v, causal=causal, scale=0.3, cu_seqlens=cu)
    torch.testing.assert_close(out, ref)
    _, _, _, kwargs = npu_attn.fusion_attention_args(q, k, v, causal=causal, scale=0.3, cu_seqlens=cu)
    assert kwargs["input_layout"] == ("TND" if packed else "BSND") and kwargs["head_num"] == H
    if packed:
        assert kwargs["actual_seq_qlen"] == kwargs["actual_seq_kvlen"] == [5, 6, 23]


def test_npu_attention_supports():
    from sp_kernels.dispatch import Context, resolve_profile

    npu = resolve_profile("npu:Ascend910B3")
    ctx = Context("fusion_attention", npu, torch.float64, {"D": 8, "DV": 8})
    assert npu_attn.supports_npu_attention(ctx) == (False, "npu_fusion_attention takes fp16/bf16/fp32, not torch.float64")
    assert npu_attn.supports_npu_attention(Context("fusion_attention", npu, torch.bfloat16, {"D": 8, "DV": 8}))[0]


@pytest.mark.parametrize("unsqueeze_dim", [1, 2])
@pytest.mark.parametrize("R", [4, 8])
def test_npu_rotary_translation(fake_torch_npu, unsqueeze_dim, R):
    gen = torch.Generator().manual_seed(2)
    B, T, H, HK, D = 2, 7, 4, 2, 8
    shape = (lambda h: (B, h, T, D)) if unsqueeze_dim == 1 else (lambda h: (B, T, h, D))
    q, k = torch.randn(*shape(H), generator=gen, dtype=F64), torch.randn(*shape(HK), generator=gen, dtype=F64)
    angles = torch.randn(B, T, R // 2, generator=gen, dtype=F64)
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    for got, want in zip(npu_rotary.apply_rotary_pos_emb_npu(q, k, cos, sin, unsqueeze_dim),
                         rotary_reference(q, k, cos, sin, unsqueeze_dim)):
        torch.testing.assert_close(got, want)
    x_rot, tail, r1, _ = npu_rotary.rotary_mul_args(q, cos, sin, unsqueeze_dim)
    assert x_rot.shape[-1] == R and tail.shape[-1] == D - R and r1.dim() == 4


def test_npu_rotary_supports():
    from sp_kernels.dispatch import Context, resolve_profile

    npu = resolve_profile("npu:Ascend910B3")
    ok = Context("apply_rotary_pos_emb", npu, torch.bfloat16, {"B": 1, "H": 8, "HK": 2, "D": 256, "R": 64})
    assert npu_rotary.supports_npu_rotary(ok) == (True, "")
    odd = Context("apply_rotary_pos_emb", npu, torch.bfloat16, {"B": 1, "H": 8, "D": 256, "R": 900})
    assert "even rotary dim < 896" in npu_rotary.supports_npu_rotary(odd)[1]
    many = Context("apply_rotary_pos_emb", npu, torch.bfloat16, {"B": 1000, "H": 8, "D": 256, "R": 64})
    assert "B < 1000" in npu_rotary.supports_npu_rotary(many)[1]


@pytest.fixture
def fake_fla_rotary(monkeypatch):
    def rotary_embedding(x, cos, sin, interleaved=False, **_):  # fla's reference semantics: cos/sin [T, R/2]
        R = cos.shape[-1] * 2
        c, s = torch.cat([cos] * 2, -1)[:, None], torch.cat([sin] * 2, -1)[:, None]
        x1, x2 = x[..., :R].chunk(2, -1)
        return torch.cat([x[..., :R] * c + torch.cat((-x2, x1), -1) * s, x[..., R:]], -1)

    fla = types.ModuleType("fla")
    modules = types.ModuleType("fla.modules")
    rotary = types.ModuleType("fla.modules.rotary")
    rotary.rotary_embedding = rotary_embedding
    for name, mod in (("fla", fla), ("fla.modules", modules), ("fla.modules.rotary", rotary)):
        monkeypatch.setitem(sys.modules, name, mod)


def test_fla_rotary_translation_and_fallback(fake_fla_rotary):
    gen = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, 4, 9, 8, generator=gen, dtype=F64), torch.randn(2, 2, 9, 8, generator=gen, dtype=F64)
    angles = torch.randn(1, 9, 2, generator=gen, dtype=F64).expand(2, 9, 2)
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    for got, want in zip(fla_rotary.apply_rotary_pos_emb_fla(q, k, cos, sin), rotary_reference(q, k, cos, sin)):
        torch.testing.assert_close(got, want)
    c, s = fla_rotary.half_width(cos, sin)
    assert c.shape == (9, 2)
    other = cos.clone()
    other[1] += 0.1  # per-row positions: fla cannot share cos over the batch
    assert "differ across the batch" in fla_rotary.half_width(other, sin)
    with pytest.warns(UserWarning, match="using the torch implementation"):
        got = fla_rotary.apply_rotary_pos_emb_fla(q, k, other, sin)
    torch.testing.assert_close(got[0], rotary_reference(q, k, other, sin)[0])


def test_flash_attn_varlen_args():
    args = varlen_args(torch.tensor([0, 5, 6, 23]))
    assert args["cu_seqlens_q"].dtype == torch.int32 and args["cu_seqlens_q"].tolist() == [0, 5, 6, 23]
    assert args["max_seqlen_q"] == args["max_seqlen_k"] == 17


def test_mindspeed_grouped_value_heads_by_repeating_qk(monkeypatch):
    """MindSpeed takes one value head per q/k head: repeating q and k is exact, forward and backward."""
    def ms_chunk(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                 use_qk_l2norm_in_kernel=False, cu_seqlens=None, **_):
        assert q.shape[2] == v.shape[2]
        return naive_recurrent_gated_delta_rule(q, k, v, g, beta, scale=scale, initial_state=initial_state,
                                                output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                                                use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)

    monkeypatch.setitem(sys.modules, mindspeed.MODULE, types.SimpleNamespace(chunk_gated_delta_rule=ms_chunk))
    gen = torch.Generator().manual_seed(4)
    B, T, H, HV, K = 1, 13, 2, 4, 8
    q = torch.randn(B, T, H, K, generator=gen, dtype=F64, requires_grad=True)
    k = torch.randn(B, T, H, K, generator=gen, dtype=F64, requires_grad=True)
    v = torch.randn(B, T, HV, K, generator=gen, dtype=F64, requires_grad=True)
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, HV, generator=gen, dtype=F64)).requires_grad_()
    beta = torch.rand(B, T, HV, generator=gen, dtype=F64).requires_grad_()
    kw = dict(scale=K**-0.5, initial_state=None, output_final_state=True, cu_seqlens=None,
              use_qk_l2norm_in_kernel=True)
    ours = mindspeed.chunk_gated_delta_rule_mindspeed(q, k, v, g, beta, **kw)
    ref = naive_recurrent_gated_delta_rule(q, k, v, g, beta, **kw)
    torch.testing.assert_close(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1])
    grads = torch.autograd.grad(ours[0].sum(), (q, k, v, g, beta))
    for a, b in zip(grads, torch.autograd.grad(ref[0].sum(), (q, k, v, g, beta))):
        torch.testing.assert_close(a, b)


def test_fla_block_ptr_probe(tmp_path):
    from sp_kernels._fla import _uses_block_ptr

    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "old.py").write_text("p = tl.make_block_ptr(x, (1,), (1,), (0,), (1,), (0,))\n")
    (tmp_path / "ops" / "triton_ascend").mkdir()
    (tmp_path / "ops" / "triton_ascend" / "npu.py").write_text("tl.make_block_ptr\n")
    (tmp_path / "ops" / "new.py").write_text("tl.load(p + offs)\n")
    assert _uses_block_ptr(str(tmp_path)) == ("ops/old.py",)
