"""``python -m kernels demo``: a tiny Qwen3.5 model, kernelized for this device, checked against transformers."""
from __future__ import annotations

import copy
import time

import torch

from sp_kernels.kernelize import kernelize


def tiny_qwen3_5_config(**overrides):
    """A small Qwen3.5 text config (2 GatedDeltaNet + 2 attention layers, grouped heads, partial rotary)."""
    from transformers import Qwen3_5TextConfig

    cfg = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
               linear_key_head_dim=16, linear_value_head_dim=16, linear_conv_kernel_dim=4,
               layer_types=["linear_attention", "full_attention"] * 2, use_cache=False)
    cfg.update(overrides)
    return Qwen3_5TextConfig(**cfg)


def scramble_weights(model: torch.nn.Module, std: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Re-draw every weight from N(0, std): at init (std 0.02) the mixers barely move the logits, which would let a
    parity check pass whatever they compute. ``A_log`` and ``dt_bias`` keep their ranges (decays stay in (0, 1))."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("A_log", "dt_bias")):
                continue
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * std)
    return model


def _loss_and_grads(model, **batch):
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    return out.logits.detach(), out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _max_diff(a: dict, b: dict) -> tuple[float, float]:
    """Max abs difference of the gradients, and max relative difference of the norm weights' gradients:
    transformers' RMSNorm computes in float32 whatever the model dtype, so input gradients that differ in the
    last float64 bits flip float32 roundings there (relative ~1e-7)."""
    plain = max((a[k] - b[k]).abs().max().item() for k in a if "norm" not in k)
    norms = [(a[k] - b[k]).abs().max().item() / max(b[k].abs().max().item(), 1e-30) for k in a if "norm" in k]
    return plain, max(norms, default=0.0)


# transformers computes the delta rule in float32 even in a float64 model; our float64 references agree to 1e-10
TOLERANCE = {"unpatched transformers model": 2e-3, "float64 reference implementations": 1e-10}


def main(device: str | None = None, seed: int = 0) -> int:
    from transformers import Qwen3_5ForCausalLM

    torch.manual_seed(seed)
    dev = torch.device(device or "cpu")
    base = scramble_weights(Qwen3_5ForCausalLM(tiny_qwen3_5_config())).to(dev, torch.float64)
    model = copy.deepcopy(base)
    t0 = time.perf_counter()
    report = kernelize(model)
    print("Dispatch table (kernels.kernelize):")
    print(report.table())

    ids = torch.randint(0, 96, (2, 37), device=dev)
    batch = dict(input_ids=ids, labels=ids)
    logits, loss, grads = _loss_and_grads(model, **batch)
    print(f"\nOrdinary batch {tuple(ids.shape)}, float64:")
    try:
        ref_logits, ref_loss, ref_grads = _loss_and_grads(base, **batch)
        what = "unpatched transformers model"
    except Exception as exc:  # e.g. fla installed on a CPU machine: transformers sends CPU tensors to Triton
        print(f"  unpatched transformers model fails here: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        ref = copy.deepcopy(base)
        kernelize(ref, force={op: "reference" for op in ("causal_conv1d", "chunk_gated_delta_rule",
                                                         "rotary", "fusion_attention")})
        ref_logits, ref_loss, ref_grads = _loss_and_grads(ref, **batch)
        what = "float64 reference implementations"
    grad_diff, norm_rel = _max_diff(grads, ref_grads)
    diffs = [(logits - ref_logits).abs().max().item(), (loss - ref_loss).abs().item(), grad_diff]
    ok = max(diffs) <= TOLERANCE[what] and norm_rel <= max(TOLERANCE[what], 1e-6)
    print(f"  vs {what}: |logits| {diffs[0]:.2e}  |loss| {diffs[1]:.2e}  |grad| {diffs[2]:.2e} "
          f"(max abs diff; {'OK' if ok else 'FAIL'}: tolerance {TOLERANCE[what]:.0e}); norm weights' grads "
          f"{norm_rel:.1e} relative (float32 RMSNorm in transformers; tolerance {max(TOLERANCE[what], 1e-6):.0e})")

    lengths = [11, 1, 25, 17]
    seqs = [torch.randint(0, 96, (1, n), device=dev) for n in lengths]
    packed_ids = torch.cat(seqs, dim=1)
    position_ids = torch.cat([torch.arange(n, device=dev) for n in lengths])[None]
    packed = model(input_ids=packed_ids, position_ids=position_ids).logits
    alone = torch.cat([model(input_ids=s).logits for s in seqs], dim=1)
    print(f"\nPacked batch (padding-free, lengths {lengths}, position_ids restarting at 0):")
    packed_diff = (packed - alone).abs().max().item()
    packed_ok = packed_diff <= 1e-10
    print(f"  vs each sequence run alone: |logits| {packed_diff:.2e} (max abs diff; "
          f"{'OK' if packed_ok else 'FAIL'}: tolerance 1e-10)")
    print(f"\nDone in {time.perf_counter() - t0:.1f} s.")
    return 0 if ok and packed_ok else 1
