"""kernelize(model, sp_size=N) on N gloo ranks gives the loss and (mean-reduced) gradients of sp_size=1."""
import socket

import pytest
import torch
import torch.multiprocessing as mp

from tests.sp import workers

pytestmark = pytest.mark.distributed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn, world, *args):
    mp.spawn(workers.run, args=(fn, world, free_port(), *args), nprocs=world, join=True)


@pytest.mark.parametrize("world", [2, 4])
def test_qwen3_5_parity(world):
    # 22 is not a multiple of 4 (padding); packed lengths put boundaries inside and across shards
    spawn(workers.parity, world, [("qwen3_5", torch.float64)], [22])


def test_qwen3_next_and_qwen3_5_moe_parity():
    spawn(workers.parity, 2, [("qwen3_next", torch.float32), ("qwen3_5_moe", torch.float32)], [21])


def test_marked_modules_keep_their_npu_delta_rule():
    spawn(workers.marked_modules, 2)


def test_bad_group_and_unsupported_calls():
    spawn(workers.bad_group, 2)


def test_sp_conv_choice_follows_the_unified_buffer_at_sp_shapes():
    spawn(workers.sp_dispatch, 2)


@pytest.mark.parametrize("world", [2, 4])
def test_multimodal_images_and_copies(world):
    spawn(workers.multimodal_and_copies, world)


@pytest.mark.parametrize("world", [2, 4])
def test_sharded_loss_options_and_refusals(world):
    spawn(workers.loss_options, world)


def test_ddp_over_two_sp_groups_equals_one_process():
    spawn(workers.ddp_over_sp_groups, 4)


def test_fsdp2_with_sp_equals_one_process():
    spawn(workers.fsdp2_with_sp, 2)


def test_data_parallel_sp_groups_without_an_explicit_group():
    spawn(workers.data_parallel_sp_groups, 4)


@pytest.mark.parametrize("world", [2, 4])
def test_fewer_key_value_heads_than_ranks(world):
    spawn(workers.fewer_kv_heads_than_ranks, world)


@pytest.mark.parametrize("world", [2, 4])
def test_padded_batches_equal_sp_size_1(world):
    spawn(workers.padded_batches, world)


def test_the_trainer_over_dp_and_sp_equals_one_process(tmp_path):
    pytest.importorskip("accelerate")
    spawn(workers.trainer_dp_sp, 4, str(tmp_path))


@pytest.mark.parametrize("world", [2, 4])
def test_context_parallel_gated_deltanet(world):
    spawn(workers.context_parallel, world)


def test_compiled_fullgraph_equals_eager():
    spawn(workers.compiled, 2)
