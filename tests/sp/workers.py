"""Code run on every rank of a gloo process group (spawned by tests/sp/test_sequence_parallel.py)."""
import copy
import os
import sys
import traceback

# as in tests/conftest.py: hide flash-linear-attention, whose Triton kernels cannot run the CPU tensors here (a
# simulated NPU profile would otherwise select them)
sys.modules.setdefault("fla", None)

import torch
import torch.distributed as dist

import sp_kernels
from sp_kernels.kernelize.sequence_parallel import SP_GROUP
from tests.kernelize.models import build

# heads that divide by 2 and 4: 4 key / 8 value GatedDeltaNet heads (grouped), 8 query / 4 KV attention heads
SP_CONFIG = dict(linear_num_key_heads=4, linear_num_value_heads=8, linear_key_head_dim=8, linear_value_head_dim=8,
                 num_attention_heads=8, num_key_value_heads=4, head_dim=8)
TOL = {torch.float64: (1e-10, 2e-6), torch.float32: (2e-5, 5e-5)}  # (logits/loss, gradients)


def init(rank: int, world: int, port: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)


def loss_and_grads(model, batch, sp_size=1, group=None):
    """Logits (gathered over the SP group), loss and the gradients' mean over the SP group (``group``: the default
    group when it is the SP group)."""
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        if sp_size > 1:  # the contract: mean of the gradients over the SP group
            dist.all_reduce(g, op=dist.ReduceOp.SUM, group=group)
            g = g / sp_size
        grads[name] = g
    logits = out.logits.detach()
    if sp_size > 1:  # this rank's shard of the logits: gathered back to compare with sp_size=1
        T = batch["input_ids"].shape[1]
        assert logits.shape[1] == -(-T // sp_size), logits.shape
        logits = sp_kernels.sp_gather(model, logits, seq_len=T)
    return logits, out.loss.detach(), grads


def check(tag, ours, ref, dtype, tolerances=None):
    tol, gtol = tolerances or TOL[dtype]
    torch.testing.assert_close(ours[0], ref[0], rtol=tol, atol=tol, msg=lambda m: f"{tag} logits: {m}")
    # transformers' loss runs in float32 (logits.float()) even in a float64 model: a sum split over ranks rounds
    # differently there
    ltol = max(tol, 2e-6)
    torch.testing.assert_close(ours[1], ref[1], rtol=ltol, atol=ltol, msg=lambda m: f"{tag} loss: {m}")
    for name in ref[2]:
        torch.testing.assert_close(ours[2][name], ref[2][name], rtol=gtol, atol=gtol,
                                   msg=lambda m, n=name: f"{tag} grad {n}: {m}")


def batches(T: int):
    gen = torch.Generator().manual_seed(T)
    ids = torch.randint(0, 96, (2, T), generator=gen)
    yield "ordinary", dict(input_ids=ids, labels=ids)
    lengths = [5, 1, T - 9, 3]  # boundaries inside shards and across them
    packed = torch.randint(0, 96, (1, sum(lengths)), generator=gen)
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    yield "packed", dict(input_ids=packed, position_ids=position_ids, labels=packed)


def parity(rank: int, world: int, port: int, families, lengths) -> None:
    init(rank, world, port)
    try:
        for family, dtype in families:
            base = build(family, dtype, **SP_CONFIG)
            single = copy.deepcopy(base)
            sp_kernels.kernelize(single)
            model = copy.deepcopy(base)
            report = sp_kernels.kernelize(model, sp_size=world)
            assert report.sp_size == world
            for T in lengths:
                for kind, batch in batches(T):
                    check(f"{family} {kind} T={T} rank {rank}", loss_and_grads(model, batch, world),
                          loss_and_grads(single, batch), dtype)
    finally:
        dist.destroy_process_group()


def marked_modules(rank: int, world: int, port: int) -> None:
    """A model kernelized with NPU kernels (simulated 910B, stand-ins) keeps its delta rule under SP."""
    from tests.kernelize.test_kernelize import counting_standins
    from tests.helpers import device_standins_on_cpu
    from sp_kernels.dispatch import registered

    init(rank, world, port)
    try:
        impls, calls = counting_standins(("npu",), prefix="npu")
        base = build("qwen3_5", **SP_CONFIG)
        with registered(*impls), device_standins_on_cpu():
            single = copy.deepcopy(base)
            sp_kernels.kernelize(single)
            model = copy.deepcopy(base)
            sp_kernels.kernelize(model, device="npu:Ascend910B3")
            assert all(getattr(m, sp_kernels.NPU_MARKER) for m in (model.model.layers[0].linear_attn,))
            report = sp_kernels.kernelize(model, sp_size=world, device="npu:Ascend910B3")
            gdn = [m for m in report.modules if m.cls.endswith("GatedDeltaNet")]
            assert all(m.ops["chunk_gated_delta_rule"] == "npu_chunk_gated_delta_rule" for m in gdn), report
            before = dict(calls)
            for kind, batch in batches(22):
                check(f"marked {kind} rank {rank}", loss_and_grads(model, batch, world),
                      loss_and_grads(single, batch), torch.float64)
            assert calls["chunk_gated_delta_rule"] > before["chunk_gated_delta_rule"]
    finally:
        dist.destroy_process_group()


def bad_group(rank: int, world: int, port: int) -> None:
    init(rank, world, port)
    try:
        model = build("qwen3_5", **SP_CONFIG)
        try:
            sp_kernels.kernelize(model, sp_size=2 * world)
        except ValueError as exc:
            assert f"sp_size: the default process group has {world} ranks, not a multiple of sp_size={2 * world}" in str(exc), exc
        else:
            raise AssertionError("group size != sp_size was accepted")
        sp_kernels.kernelize(model, sp_size=world)
        from transformers import DynamicCache

        from tests.kernelize.test_parity import cache_keyword

        cache = {cache_keyword(model): DynamicCache(config=model.config)}  # an explicit cache, by this version's name
        for kwargs, match in ((dict(use_cache=True), "use_cache: decoding with a cache under sequence parallelism"),
                              (cache, "use_cache: decoding with a cache under sequence parallelism"),
                              (dict(attention_mask=torch.ones(2, 1, 10, 10)), "attention_mask: under sequence "
                                                                              "parallelism a [B, T] padding mask")):
            try:
                model(input_ids=torch.randint(0, 96, (2, 10)), **kwargs)
            except NotImplementedError as exc:
                assert match in str(exc), exc
            else:
                raise AssertionError(f"{kwargs} was accepted under SP")
    finally:
        dist.destroy_process_group()


def run(rank, fn, *args):
    try:
        fn(rank, *args)
    except Exception:
        traceback.print_exc()
        raise
    # The check passed and the process group is destroyed. Leave without Python's finalization: a background
    # thread of gloo / FSDP2 still being torn down then can abort the process ("terminate called without an active
    # exception", seen once in a full CI run after the FSDP2 check had passed), which would fail a passed test.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def sp_dispatch(rank: int, world: int, port: int) -> None:
    """Under SP the conv is chosen at the local-heads / global-length shapes, against the Unified Buffer."""
    from sp_kernels.dispatch import Implementation, implementations, registered, resolve_profile
    from sp_kernels.dispatch.ub import Launch
    from tests.helpers import device_standins_on_cpu, only_portable

    init(rank, world, port)
    try:
        seen = []
        torch_conv = implementations("causal_conv1d")["torch"].fn

        def launches(ctx):  # one tile, channel tile up to 128: shrinks with the local channels
            seen.append(dict(ctx.shapes))
            return (Launch("fla.causal_conv1d_fwd", {"BT": 64, "BD": min(128, ctx.shapes["D"]), "W": 4}, 40),)

        triton = Implementation("causal_conv1d", "triton_standin", fn=torch_conv, device_types=("npu",),
                                priority=50, launches=launches)
        # a 64 KiB Unified Buffer: the tile at D = 128 channels (BD=128) overflows it, at D / 2 (BD=64) it fits
        npu = resolve_profile("npu:Ascend910B3").replace(ub_bytes=64 * 1024)
        base = build("qwen3_5", **SP_CONFIG)
        with only_portable(), registered(triton), device_standins_on_cpu():
            single = copy.deepcopy(base)
            report = sp_kernels.kernelize(single, device=npu)
            assert all(m.ops["causal_conv1d"] != "triton_standin" for m in report.modules if "causal_conv1d" in m.ops)
            model = copy.deepcopy(base)
            sp_kernels.kernelize(model, sp_size=world, device=npu)
            gdn = model.model.layers[0].linear_attn._sp_kernels.ops["causal_conv1d"]
            for kind, batch in batches(22):
                check(f"sp dispatch {kind} rank {rank}", loss_and_grads(model, batch, world),
                      loss_and_grads(single, batch), torch.float64)
            T = 24 if world == 4 else 22  # the global length after padding to a multiple of sp_size
            sel = gdn.selection(packed=False, T=T)
            assert sel.chosen.name == "triton_standin", sel.explain()
            assert dict(sel.context.shapes)["D"] == 128 // world and dict(sel.context.shapes)["T"] == T
            assert sel.context.sp_size == world
            # a smaller Unified Buffer flips the choice back to torch, with the numbers in the reason
            sp_kernels.kernelize(model, sp_size=world, device=npu.replace(ub_bytes=32 * 1024))
            sel = model.model.layers[0].linear_attn._sp_kernels.ops["causal_conv1d"].selection(packed=False, T=T)
            assert sel.chosen.name == "torch" and "(ub overflow)" in dict(sel.rejected)["triton_standin"]
    finally:
        dist.destroy_process_group()


def multimodal_and_copies(rank: int, world: int, port: int) -> None:
    """Qwen3.5 with images (mRoPE positions [3, B, T]) under SP equals sp_size=1: batch 1 and 2, and packed. A copy
    of an SP-kernelized model runs the same; pickling one is refused (it is bound to this rank)."""
    import io
    import pickle

    from tests.kernelize.models import build_multimodal, image_sample, pack_samples, stack_samples

    init(rank, world, port)
    try:
        base = build_multimodal("qwen3_5", torch.float64, **SP_CONFIG)
        single = copy.deepcopy(base)
        sp_kernels.kernelize(single)
        model = copy.deepcopy(base)
        sp_kernels.kernelize(model, sp_size=world)
        samples = [image_sample(5, 7, seed=0), image_sample(0, 3, grid=(1, 4, 8), seed=1), image_sample(4, 8, seed=2)]
        cases = {"one image": stack_samples(samples[:1]), "two rows": stack_samples([samples[0], samples[2]]),
                 "packed": pack_samples(base, samples)}
        for kind, batch in cases.items():
            batch = dict(batch, labels=batch["input_ids"])
            check(f"multimodal {kind} rank {rank}", loss_and_grads(model, batch, world),
                  loss_and_grads(single, batch), torch.float64)
        clone = copy.deepcopy(model)
        batch = dict(cases["packed"], labels=cases["packed"]["input_ids"])
        check(f"copy rank {rank}", loss_and_grads(clone, batch, world), loss_and_grads(model, batch, world),
              torch.float64)
        try:
            torch.save(model, io.BytesIO())
        except (TypeError, pickle.PicklingError) as exc:
            assert "kernelized with sp_size > 1" in str(exc), exc
        else:
            raise AssertionError("an SP-kernelized model was pickled")
    finally:
        dist.destroy_process_group()


def loss_options(rank: int, world: int, port: int) -> None:
    """The sharded loss honours num_items_in_batch, shift_labels and -100; gather_logits gives the full logits;
    what it cannot shard is refused; a forward + backward warns about nothing."""
    import warnings

    init(rank, world, port)
    try:
        base = build("qwen3_5", torch.float64, **SP_CONFIG)
        single = copy.deepcopy(base)
        sp_kernels.kernelize(single)
        model = copy.deepcopy(base)
        sp_kernels.kernelize(model, sp_size=world)
        T = 23
        gen = torch.Generator().manual_seed(3)
        ids = torch.randint(0, 96, (2, T), generator=gen)
        labels = ids.masked_fill(torch.rand(2, T, generator=gen) < 0.3, -100)
        shifted = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
        for kind, extra in (("labels with -100", dict(labels=labels)),
                            ("num_items_in_batch", dict(labels=labels, num_items_in_batch=torch.tensor(11))),
                            ("shift_labels", dict(labels=labels, shift_labels=shifted))):
            batch = dict(input_ids=ids, **extra)
            check(f"{kind} rank {rank}", loss_and_grads(model, batch, world), loss_and_grads(single, batch),
                  torch.float64)
        assert torch.equal(sp_kernels.sp_slice(model, shifted, fill=-100), sp_kernels.sp_slice(model, labels, shift=True,
                                                                                          fill=-100))
        for call, match in ((lambda: sp_kernels.sp_slice(model, labels, dim=2), "dim: expected a dimension of x"),
                            (lambda: sp_kernels.sp_gather(model, labels, seq_len=0), "seq_len: expected an int in")):
            try:
                call()
            except ValueError as exc:
                assert match in str(exc), exc
            else:
                raise AssertionError(match)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no deprecation (or any) warning on the SP hot path
            out = model(input_ids=ids, labels=labels)
            out.loss.backward()
        full = copy.deepcopy(base)
        sp_kernels.kernelize(full, sp_size=world, gather_logits=True)
        with torch.no_grad():
            logits = full(input_ids=ids, labels=labels).logits
            torch.testing.assert_close(logits, single(input_ids=ids).logits, rtol=1e-10, atol=1e-10)
        for kwargs, match in ((dict(logits_to_keep=1), "logits_to_keep: under sequence parallelism"),):
            try:
                model(input_ids=ids, **kwargs)
            except NotImplementedError as exc:
                assert match in str(exc), exc
            else:
                raise AssertionError(f"{kwargs} was accepted under SP")
        moe = build("qwen3_5_moe", torch.float32, **SP_CONFIG, output_router_logits=True)
        sp_kernels.kernelize(moe, sp_size=world)
        try:
            moe(input_ids=ids, labels=ids)
        except NotImplementedError as exc:
            assert "output_router_logits: the MoE load-balancing loss is not sharded" in str(exc), exc
        else:
            raise AssertionError("output_router_logits was accepted under SP")
    finally:
        dist.destroy_process_group()


def ordinary_and_packed(seed: int, T: int = 21) -> list[dict]:
    """Two training batches: an ordinary one and a packed one, T not a multiple of 2 or 4."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 96, (1, T), generator=gen)
    packed = torch.randint(0, 96, (1, T), generator=gen)
    position_ids = torch.cat([torch.arange(n) for n in (6, 1, T - 7)])[None]
    return [dict(input_ids=ids, labels=ids), dict(input_ids=packed, position_ids=position_ids, labels=packed)]


def _steps(model, optimizer, batches):
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()


def _reference(base, batches_per_step, steps):
    """A single process, sp_size=1: each step averages the losses of the data-parallel batches."""
    model = copy.deepcopy(base)
    sp_kernels.kernelize(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        batches = batches_per_step[step]
        (sum(model(**b).loss for b in batches) / len(batches)).backward()
        optimizer.step()
    return model


def ddp_over_sp_groups(rank: int, world: int, port: int) -> None:
    """4 ranks = 2 SP groups of 2, DistributedDataParallel over the world: after 2 AdamW steps the parameters are
    those of a single process averaging the 2 groups' batches."""
    from torch.nn.parallel import DistributedDataParallel

    init(rank, world, port)
    try:
        assert world == 4
        groups = [dist.new_group([0, 1]), dist.new_group([2, 3])]
        base = build("qwen3_5", torch.float64, **SP_CONFIG)
        steps = [[ordinary_and_packed(seed=5 + 2 * step + g)[step] for g in range(2)]
                 for step in range(2)]  # [step][data-parallel group]: an ordinary batch, then a packed one
        model = copy.deepcopy(base)
        sp_kernels.kernelize(model, sp_size=2, group=groups[rank // 2])
        ddp = DistributedDataParallel(model)
        optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-2)
        _steps(ddp, optimizer, [step[rank // 2] for step in steps])
        ref = _reference(base, steps, 2)
        for (name, p), q in zip(model.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-8, msg=lambda m, n=name: f"DDP rank {rank} {n}: {m}")
    finally:
        dist.destroy_process_group()


def fsdp2_with_sp(rank: int, world: int, port: int) -> None:
    """FSDP2 (fully_shard) over the SP group of 2: after 2 AdamW steps the parameters equal a single process."""
    from torch.distributed.fsdp import fully_shard

    init(rank, world, port)
    try:
        base = build("qwen3_5", torch.float64, **SP_CONFIG)
        steps = [[batch] for batch in ordinary_and_packed(seed=6)]
        model = copy.deepcopy(base)
        sp_kernels.kernelize(model, sp_size=world)
        fully_shard(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        _steps(model, optimizer, [step[0] for step in steps])
        ref = _reference(base, steps, 2)
        for (name, p), q in zip(model.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p.full_tensor(), q, rtol=1e-6, atol=1e-8,
                                       msg=lambda m, n=name: f"FSDP2 rank {rank} {n}: {m}")
        dist.barrier()  # both ranks done with FSDP2's collectives before the group goes
    finally:
        dist.destroy_process_group()


def data_parallel_sp_groups(rank: int, world: int, port: int) -> None:
    """4 ranks, sp_size=2 without a group: kernelize forms the SP groups [0, 1] and [2, 3] and says which data
    each feeds; a ("dp", "sp") DeviceMesh gives the same; each group's loss and gradients are sp_size=1's on its
    own batch. Layouts that do not fit are errors naming the argument."""
    from torch.distributed.device_mesh import init_device_mesh

    init(rank, world, port)
    try:
        assert world == 4
        base = build("qwen3_5", torch.float64, **SP_CONFIG)
        single = copy.deepcopy(base)
        sp_kernels.kernelize(single)
        mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "sp"))
        for group in (None, mesh):
            model = copy.deepcopy(base)
            report = sp_kernels.kernelize(model, sp_size=2, group=group)
            assert (report.dp_rank, report.dp_size) == (rank // 2, 2), report
            sp = getattr(model.model, SP_GROUP)
            assert sp.rank == rank % 2 and dist.get_process_group_ranks(sp.group) == [rank // 2 * 2, rank // 2 * 2 + 1]
            for kind, batch in batches(19 + report.dp_rank):  # each SP group its own batch
                check(f"dp x sp {kind} group={type(group).__name__} rank {rank}",
                      loss_and_grads(model, batch, sp.size, sp.group),
                      loss_and_grads(single, batch), torch.float64)
        wide = build("qwen3_5", torch.float64, **{**SP_CONFIG, "linear_num_key_heads": 8})  # heads divide by 8
        try:
            sp_kernels.kernelize(wide, sp_size=8)
        except ValueError as exc:
            assert "sp_size: the default process group has 4 ranks, not a multiple of sp_size=8" in str(exc), exc
        else:
            raise AssertionError("sp_size=8 on 4 ranks was accepted")
        model = copy.deepcopy(base)
        for kwargs, match in (
                              (dict(sp_size=2, group=init_device_mesh("cpu", (2, 2), mesh_dim_names=("a", "b"))),
                               "group: a DeviceMesh of 2 dimensions needs one named 'sp'"),
                              (dict(sp_size=4, group=mesh), "group: the mesh's sequence-parallel dimension has "
                                                            "2 ranks but sp_size=4"),
                              (dict(sp_size=4, group=mesh["sp"]), "group: the mesh's sequence-parallel dimension has "
                                                                  "2 ranks but sp_size=4")):
            try:
                sp_kernels.kernelize(model, **kwargs)
            except ValueError as exc:
                assert match in str(exc), exc
            else:
                raise AssertionError(f"{kwargs} was accepted")
        report = sp_kernels.kernelize(model, sp_size=2, group=mesh["sp"])  # a dimension cut from the mesh
        assert (report.dp_rank, report.dp_size) == (None, None)
    finally:
        dist.destroy_process_group()


def fewer_kv_heads_than_ranks(rank: int, world: int, port: int) -> None:
    """Released head ratios with fewer key/value heads than ranks (8 query / 2 KV heads, and 1 KV head): each
    rank gets a copy of the KV head its query heads use; loss and gradients equal sp_size=1 (the copies' gradients
    sum back into the one k_proj / v_proj)."""
    init(rank, world, port)
    try:
        for kv in (1, 2):
            base = build("qwen3_5", torch.float64, **{**SP_CONFIG, "num_key_value_heads": kv})
            single = copy.deepcopy(base)
            sp_kernels.kernelize(single)
            model = copy.deepcopy(base)
            sp_kernels.kernelize(model, sp_size=world)
            for kind, batch in batches(22):
                check(f"kv={kv} {kind} rank {rank}", loss_and_grads(model, batch, world), loss_and_grads(single, batch),
                      torch.float64)
    finally:
        dist.destroy_process_group()


def padded_batches(rank: int, world: int, port: int) -> None:
    """A batch padded through attention_mask (right and left padding, B=2 and 3): packed into one row, sharded, run,
    and its hidden states put back in the caller's layout; loss and gradients equal sp_size=1 on the same padded
    batch (labels -100 wherever they are predicted from padding, as every padding collator makes them on the
    right; on the left the first real token's label too, or a ValueError says so)."""
    init(rank, world, port)
    try:
        base = build("qwen3_5", torch.float64, **{**SP_CONFIG, "num_key_value_heads": 2})
        single = copy.deepcopy(base)
        sp_kernels.kernelize(single)
        model = copy.deepcopy(base)
        sp_kernels.kernelize(model, sp_size=world)
        gen = torch.Generator().manual_seed(3)
        for side, lengths in (("right", (23, 14)), ("left", (23, 9, 17))):
            T = max(lengths)
            ids = torch.randint(1, 96, (len(lengths), T), generator=gen)
            mask = torch.zeros_like(ids)
            for row, n in enumerate(lengths):
                mask[row, :n] = 1
            if side == "left":
                mask = mask.flip(1)
            labels = ids.masked_fill(mask == 0, -100)
            if side == "left":  # the first real token is predicted from padding
                first = (mask.cumsum(1) == 1) & (mask == 1)
                try:
                    model(input_ids=ids, attention_mask=mask, labels=labels)
                except ValueError as exc:
                    assert "labels: a label predicted from a padded position" in str(exc), exc
                else:
                    raise AssertionError("a label predicted from padding was accepted")
                labels = labels.masked_fill(first, -100)
            batch = dict(input_ids=ids, attention_mask=mask, labels=labels)
            ours, ref = loss_and_grads(model, batch, world), loss_and_grads(single, batch)
            real = mask.bool()[..., None]  # padded positions' logits are not defined under SP (no model runs there)
            ours, ref = (ours[0] * real, *ours[1:]), (ref[0] * real, *ref[1:])
            check(f"padded {side} rank {rank}", ours, ref, torch.float64)
    finally:
        dist.destroy_process_group()


def trainer_dp_sp(rank: int, world: int, port: int, out_dir: str) -> None:
    """transformers' Trainer on 4 ranks = 2 SP groups of 2 (SequenceParallelTrainer, DataCollatorWithFlattening):
    after 2 optimizer steps the parameters equal one process trained on the same global batches (each step: both SP
    groups' batches, their token losses summed over the count of all their tokens). SGD, whose step follows the
    gradient's scale (Adam's would hide a loss scaled by the wrong count)."""
    from torch.utils.data import DistributedSampler
    from transformers import DataCollatorWithFlattening, TrainingArguments

    from sp_kernels.trainer import SequenceParallelTrainer

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    init(rank, world, port)
    try:
        gen = torch.Generator().manual_seed(11)
        data = [{"input_ids": torch.randint(1, 96, (n,), generator=gen).tolist()} for n in (9, 14, 5, 11, 7, 12, 6, 10)]
        collator = DataCollatorWithFlattening()
        base = build("qwen3_5", torch.float64, **SP_CONFIG)
        model = copy.deepcopy(base)
        report = sp_kernels.kernelize(model, sp_size=2)
        args = TrainingArguments(output_dir=out_dir, per_device_train_batch_size=2, max_steps=2, learning_rate=0.5,
                                 lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=0.0,
                                 optim="sgd", use_cpu=True, ddp_backend="gloo", report_to=[], seed=7,
                                 save_strategy="no", logging_strategy="no", dataloader_drop_last=True,
                                 average_tokens_across_devices=True, remove_unused_columns=False)
        trainer = SequenceParallelTrainer(model=model, args=args, train_dataset=data, data_collator=collator)
        trainer.train()

        # one process: the same global batches, each step's loss the sum over both groups' tokens / their count
        ref = copy.deepcopy(base)
        sp_kernels.kernelize(ref)
        optimizer = torch.optim.SGD(ref.parameters(), lr=0.5)
        orders = [list(DistributedSampler(data, num_replicas=report.dp_size, rank=g, shuffle=True, seed=7))
                  for g in range(report.dp_size)]
        for step in range(2):
            batches = [collator([data[i] for i in order[2 * step: 2 * step + 2]]) for order in orders]
            count = sum(int((b["labels"][..., 1:] != -100).sum()) for b in batches)
            optimizer.zero_grad(set_to_none=True)
            loss = sum(ref(**b, num_items_in_batch=torch.tensor(count)).loss for b in batches)
            loss.backward()
            optimizer.step()
        for (name, p), q in zip(model.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=2e-6,  # float32 losses
                                       msg=lambda m, n=name: f"Trainer rank {rank} {n}: {m}")
            assert not torch.equal(p.detach(), base.get_parameter(name)), name  # it trained
    finally:
        dist.destroy_process_group()


def context_parallel(rank: int, world: int, port: int) -> None:
    """GatedDeltaNet layers whose linear heads the world does not divide (2 key / 6 value heads at 4 ranks) run
    context parallel: loss and gradients equal sp_size=1 (float64) on ordinary and packed batches — T not a multiple of
    the world, sequences starting exactly at rank borders, spanning 3+ ranks, shorter than a shard. Where the heads
    divide, context parallelism and Ulysses agree."""
    init(rank, world, port)
    try:
        def packed(lengths, seed):
            gen = torch.Generator().manual_seed(seed)
            ids = torch.randint(0, 96, (1, sum(lengths)), generator=gen)
            return dict(input_ids=ids, position_ids=torch.cat([torch.arange(n) for n in lengths])[None], labels=ids)

        shard = 6
        tiny = torch.randint(0, 96, (2, 5), generator=torch.Generator().manual_seed(5))
        # "few": 2 tokens per rank at 4 ranks, fewer than the conv's history (3): it spans earlier ranks
        cases = [*batches(22), ("borders", packed([shard, 2 * shard, 1, shard - 1], 1)),
                 ("short", packed([2, 1, 3 * shard - 4, 3, 2], 2)), ("few", dict(input_ids=tiny, labels=tiny)),
                 ("few packed", packed([1, 5, 1], 3))]
        odd = {**SP_CONFIG, "linear_num_key_heads": 2, "linear_num_value_heads": 6, "num_key_value_heads": 2}
        # transformers' norms compute in float32 even in a float64 model, and the rows they see differ with the
        # sharding: against sp_size=1 the logits agree to float32 rounding; context and Ulysses (the same tokens per
        # rank) agree to float64's
        tol = (2e-6, 2e-6)
        for config, modes in ((odd, (None, "context")), (SP_CONFIG, ("context", "ulysses"))):
            base = build("qwen3_5", torch.float64, **config)
            single = copy.deepcopy(base)
            sp_kernels.kernelize(single)
            results = {}
            for mode in modes:
                model = copy.deepcopy(base)
                report = sp_kernels.kernelize(model, sp_size=world, gated_deltanet_sp=mode)
                divides = config["linear_num_key_heads"] % world == 0 and config["linear_num_value_heads"] % world == 0
                expected = mode or ("ulysses" if divides else "context")
                assert [m.sp for m in report.modules] == [expected, "ulysses"] * 2, report
                assert report.table().splitlines()[1].split()[-1] == "sp", report
                for kind, batch in cases:
                    tag = f"cp heads={config['linear_num_key_heads']}/{config['linear_num_value_heads']} {kind} rank {rank}"
                    ours = results[mode, kind] = loss_and_grads(model, batch, world)
                    check(f"{tag} mode={mode}", ours, loss_and_grads(single, batch), torch.float64, tol)
            if "ulysses" in modes:
                for kind, _ in cases:
                    check(f"context vs ulysses {kind} rank {rank}", results["context", kind], results["ulysses", kind],
                          torch.float64)
        if world == 2:  # 2 key / 6 value heads divide by 2: nothing to refuse
            return
        try:
            sp_kernels.kernelize(build("qwen3_5", torch.float64, **odd), sp_size=world, gated_deltanet_sp="ulysses")
        except ValueError as exc:
            assert f"sp_size: linear_num_value_heads=6 is not divisible by sp_size={world}" in str(exc) or \
                f"sp_size: linear_num_key_heads=2 is not divisible by sp_size={world}" in str(exc), exc
        else:
            raise AssertionError("Ulysses with heads that do not divide was accepted")
    finally:
        dist.destroy_process_group()


def compiled(rank: int, world: int, port: int) -> None:
    """A kernelized SP model compiled with ``fullgraph=True`` equals itself eager (loss, logits, gradients): the
    functional collectives are traced with the rest (AOTAutograd's ``aot_eager`` for every case, inductor once).
    Packed batches pass their boundaries as ``cu_seq_lens_q`` (values cannot be read while tracing)."""
    init(rank, world, port)
    try:
        ids = torch.randint(0, 96, (2, 18), generator=torch.Generator().manual_seed(0))
        lengths = [5, 1, 9, 3]  # boundaries inside shards and across them; at 2 ranks of 9: one ends at the border
        cu = torch.tensor([0, 5, 6, 15, 18])
        packed = torch.randint(0, 96, (1, 18), generator=torch.Generator().manual_seed(1))
        position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
        cases = {"ordinary": dict(input_ids=ids, labels=ids),
                 "packed": dict(input_ids=packed, labels=packed, position_ids=position_ids, cu_seq_lens_q=cu,
                                cu_seq_lens_k=cu, max_length_q=9, max_length_k=9)}
        base = build("qwen3_5", torch.float64, **SP_CONFIG)
        for mode, backend in (("ulysses", "aot_eager"), ("context", "aot_eager"), ("ulysses", "inductor"),
                              ("context", "inductor")):
            model = copy.deepcopy(base)
            sp_kernels.kernelize(model, sp_size=world, gated_deltanet_sp=mode)
            for kind in cases if backend == "aot_eager" else ("packed",):
                torch._dynamo.reset()
                fn = copy.deepcopy(model)
                fn.compile(fullgraph=True, backend=backend)
                # inductor fuses transformers' float32 norms differently: float32 rounding
                tol = (2e-6, 2e-6) if backend == "inductor" else (1e-12, 1e-12)
                check(f"compiled {mode} {backend} {kind} rank {rank}", loss_and_grads(fn, cases[kind], world),
                      loss_and_grads(model, cases[kind], world), torch.float64, tol)
    finally:
        dist.destroy_process_group()
