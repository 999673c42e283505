"""``python -m sp_kernels demo --sp-size N``: N local processes (gloo on CPU) run a tiny Qwen3.5 model kernelized with
``sp_size=N`` and compare loss and gradients with ``sp_size=1``."""
from __future__ import annotations

import copy
import os
import socket

import torch
import torch.distributed as dist

#: heads that divide by 2, 4 and 8
SP_HEADS = dict(linear_num_key_heads=8, linear_num_value_heads=16, linear_key_head_dim=8, linear_value_head_dim=8,
                num_attention_heads=8, num_key_value_heads=8, head_dim=8)
# float64 model, but transformers runs RMSNorm and the loss (logits.float()) in float32: the loss, summed over the
# ranks' shards, and the gradients round in another order
TOLERANCE = {"loss": 2e-6, "grad": 1e-7}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _step(model, batch, sp_size):
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    grads = []
    for p in model.parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        if sp_size > 1:  # the contract: the mean of the gradients over the SP group
            dist.all_reduce(g)
            g = g / sp_size
        grads.append(g)
    return out.loss.detach(), grads


def _worker(rank: int, sp_size: int, port: int) -> None:
    from sp_kernels.demo import quiet_transformers_import, scramble_weights, tiny_qwen3_5_config

    Qwen3_5ForCausalLM = quiet_transformers_import()
    from sp_kernels.kernelize import kernelize

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=sp_size)
    try:
        torch.manual_seed(0)
        base = scramble_weights(Qwen3_5ForCausalLM(tiny_qwen3_5_config(**SP_HEADS))).double()
        single, model = copy.deepcopy(base), copy.deepcopy(base)
        kernelize(single)
        report = kernelize(model, sp_size=sp_size)

        T = 4 * sp_size * 8 + 3  # not a multiple of sp_size: padded
        ids = torch.randint(0, 96, (2, T), generator=torch.Generator().manual_seed(1))
        lengths = [7, 1, T - 12, 4]
        packed_ids = torch.randint(0, 96, (1, T), generator=torch.Generator().manual_seed(2))
        position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
        lines = [f"--- rank {rank} of {sp_size} ---", report.table()]
        gdn = next(m for m in model.modules() if hasattr(m, "_sp_kernels") and m._sp_kernels.kind == "gated_deltanet")
        padded = -(-T // sp_size) * sp_size
        for op in gdn._sp_kernels.ops:
            sel = gdn._sp_kernels.ops[op].selection(packed=False, T=padded)
            lines.append(f"[{op} at the SP shapes] {sel.context.describe()}")
            lines.append(sel.explain())
        worst = {"loss": 0.0, "grad": 0.0}
        for name, batch in (("ordinary", dict(input_ids=ids, labels=ids)),
                            ("packed", dict(input_ids=packed_ids, position_ids=position_ids, labels=packed_ids))):
            loss, grads = _step(model, batch, sp_size)
            ref_loss, ref_grads = _step(single, batch, 1)
            grad_diff = max((a - b).abs().max().item() for a, b in zip(grads, ref_grads))
            worst = {"loss": max(worst["loss"], abs(loss - ref_loss).item()), "grad": max(worst["grad"], grad_diff)}
            lines.append(f"{name} batch (T={T}): loss {loss.item():.6f} vs sp_size=1 {ref_loss.item():.6f}, "
                         f"|loss| {abs(loss - ref_loss).item():.1e}, |grad| {grad_diff:.1e} (max abs diff)")
        texts = [None] * sp_size
        dist.all_gather_object(texts, "\n".join(lines))
        worsts = [None] * sp_size
        dist.all_gather_object(worsts, worst)
        ok = all(w[k] <= TOLERANCE[k] for w in worsts for k in TOLERANCE)
        if rank == 0:
            print("\n\n".join(texts))
            summary = ", ".join(f"{k} {max(w[k] for w in worsts):.1e} (tolerance {TOLERANCE[k]:.0e})" for k in TOLERANCE)
            print(f"\nparity with sp_size=1 on every rank: {'OK' if ok else 'FAIL'} (worst {summary})")
        if not ok:
            raise SystemExit(1)
    finally:
        dist.destroy_process_group()


def main(sp_size: int) -> int:
    import torch.multiprocessing as mp

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        mp.spawn(_worker, args=(sp_size, _free_port()), nprocs=sp_size, join=True)
    except mp.ProcessExitedException:
        return 1
    return 0
