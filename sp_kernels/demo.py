"""``python -m sp_kernels demo``: a tiny Qwen3.5 model, kernelized for this device, checked against transformers."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

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


# transformers computes the delta rule (and the loss) in float32 even in a float64 model
TOLERANCE = 2e-3
REFERENCE = "transformers' torch path (unpatched model, fla hidden, in a subprocess)"
# the subprocess: fla hidden before transformers is imported (transformers binds its GatedDeltaNet functions to
# fla's Triton kernels at import when fla imports, and those cannot run on CPU tensors)
_SUBPROCESS = ('import sys; sys.modules["fla"] = None; '
               'from sp_kernels.demo import _transformers_torch_path; _transformers_torch_path(*sys.argv[1:])')


def _transformers_torch_path(inputs: str, outputs: str) -> None:
    """In the subprocess: the unpatched model on the saved weights and batch; saves logits, loss and gradients."""
    from transformers import Qwen3_5ForCausalLM

    saved = torch.load(inputs)  # (on the parent's device)
    model = Qwen3_5ForCausalLM(tiny_qwen3_5_config()).to(saved["device"], torch.float64)
    model.load_state_dict(saved["state_dict"])
    torch.save(_loss_and_grads(model, **saved["batch"]), outputs)


def _run_transformers_torch_path(state_dict: dict, batch: dict, dev: torch.device) -> tuple | None:
    """Logits, loss and gradients of :func:`_transformers_torch_path`, or ``None`` (its stderr tail printed)."""
    root = str(Path(__file__).resolve().parents[1])  # (a source checkout without install imports too)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = os.path.join(tmp, "inputs.pt"), os.path.join(tmp, "outputs.pt")
        torch.save({"state_dict": state_dict, "batch": batch, "device": str(dev)}, inputs)
        run = subprocess.run([sys.executable, "-c", _SUBPROCESS, inputs, outputs], capture_output=True, text=True,
                             env=env, timeout=600)
        if run.returncode != 0:  # its stderr otherwise holds only transformers' notes on its own fast paths
            print(f"  {REFERENCE} failed (exit code {run.returncode}):")
            print("\n".join("    " + line for line in run.stderr.splitlines()[-30:]))
            return None
        return torch.load(outputs)


def quiet_transformers_import():
    """``from transformers import Qwen3_5ForCausalLM`` without fla's warning (when fla is installed, transformers
    imports it, and it warns that Triton cannot run on this platform: about transformers' fast paths, which
    kernelize replaces). For the demos only: library users see their warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Triton is not supported on current platform")
        from transformers import Qwen3_5ForCausalLM
    return Qwen3_5ForCausalLM


def main(device: str | None = None, seed: int = 0) -> int:
    Qwen3_5ForCausalLM = quiet_transformers_import()

    torch.manual_seed(seed)
    dev = torch.device(device or "cpu")
    model = scramble_weights(Qwen3_5ForCausalLM(tiny_qwen3_5_config())).to(dev, torch.float64)
    unpatched = {k: v.clone() for k, v in model.state_dict().items()}
    t0 = time.perf_counter()
    report = kernelize(model)
    print("Dispatch table (sp_kernels.kernelize):")
    print(report.table())

    ids = torch.randint(0, 96, (2, 37), device=dev)
    batch = dict(input_ids=ids, labels=ids)
    logits, loss, grads = _loss_and_grads(model, **batch)
    print(f"\nOrdinary batch {tuple(ids.shape)}, float64:")
    ref = _run_transformers_torch_path(unpatched, batch, dev)
    ok = ref is not None
    if ok:
        ref_logits, ref_loss, ref_grads = ref
        grad_diff, norm_rel = _max_diff(grads, ref_grads)
        diffs = [(logits - ref_logits).abs().max().item(), (loss - ref_loss).abs().item(), grad_diff]
        ok = max(diffs) <= TOLERANCE and norm_rel <= TOLERANCE
        print(f"  vs {REFERENCE}:\n    |logits| {diffs[0]:.2e}  |loss| {diffs[1]:.2e}  |grad| {diffs[2]:.2e} "
              f"(max abs diff; {'OK' if ok else 'FAIL'}: tolerance {TOLERANCE:.0e}); norm weights' grads "
              f"{norm_rel:.1e} relative (float32 RMSNorm in transformers; tolerance {TOLERANCE:.0e})")

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
