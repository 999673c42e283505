"""Multimodal Qwen3.5 (images, mRoPE position_ids [3, B, T]) and packed-batch detection that real batches cannot fool."""
import copy

import pytest
import torch

import sp_kernels
from sp_kernels.kernelize.batch import cu_seqlens_from_position_ids
from tests.kernelize.models import build_multimodal, image_sample, pack_samples, stack_samples
from tests.kernelize.test_parity import TRANSFORMERS_TOL, assert_same, run

FAMILIES = [("qwen3_5", torch.float64), ("qwen3_5_moe", torch.float32)]


def ranges(*lengths):
    return torch.cat([torch.arange(n) for n in lengths])


def test_packed_only_where_positions_restart_at_zero():
    assert torch.equal(cu_seqlens_from_position_ids(ranges(3, 1, 4)[None]), torch.tensor([0, 3, 4, 8]))
    assert cu_seqlens_from_position_ids(torch.arange(8)[None]) is None  # one sequence
    assert cu_seqlens_from_position_ids(ranges(3, 5).expand(2, -1)) is None  # B != 1: not packed
    assert cu_seqlens_from_position_ids((torch.arange(6) + 4)[None]) is None  # a continuation (cache)
    # positions that jump or repeat without restarting at 0 do not start a sequence
    assert cu_seqlens_from_position_ids(torch.tensor([[0, 1, 2, 2, 2, 5, 6]])) is None


def test_mrope_rows_of_one_image_sample_are_not_packed():
    model = build_multimodal("qwen3_5")
    sample = image_sample(3, 4)
    pos = model.model.get_rope_index(sample["input_ids"], image_grid_thw=sample["image_grid_thw"],
                                     mm_token_type_ids=sample["mm_token_type_ids"])[0]
    assert pos.shape[0] == 3 and bool((pos[0, 0, 1:] == pos[0, 0, :-1]).any())  # row 0 repeats over the image
    assert cu_seqlens_from_position_ids(pos) is None
    packed = pack_samples(model, [sample, image_sample(0, 2, seed=1)])
    n = sample["input_ids"].shape[1]
    T = packed["input_ids"].shape[1]
    assert torch.equal(cu_seqlens_from_position_ids(packed["position_ids"]), torch.tensor([0, n, T]))


def test_four_rows_are_read_from_the_text_row():
    text = ranges(4, 3)
    vision = torch.zeros(3, 7, dtype=torch.long)  # all-zero vision rows: only the text row decides
    pos = torch.cat([text[None], vision])[:, None]
    assert torch.equal(cu_seqlens_from_position_ids(pos), torch.tensor([0, 4, 7]))
    assert cu_seqlens_from_position_ids(torch.cat([torch.arange(7)[None], vision])[:, None]) is None


def test_a_layout_that_is_not_known_is_an_error():
    with pytest.raises(ValueError, match=r"position_ids: expected \[B, T\], \[3, B, T\] or \[4, B, T\]"):
        cu_seqlens_from_position_ids(torch.zeros(5, 1, 7, dtype=torch.long))


@pytest.mark.parametrize("family,dtype", FAMILIES)
@pytest.mark.parametrize("rows", [1, 2])
def test_images_match_the_unpatched_model(family, dtype, rows):
    base = build_multimodal(family, dtype)
    model = copy.deepcopy(base)
    report = sp_kernels.kernelize(model)
    assert len(report.modules) == 4
    samples = [image_sample(5, 7, seed=i, dtype=dtype) for i in range(rows)]
    batch = stack_samples(samples)
    batch["labels"] = batch["input_ids"]
    assert_same(run(model, **batch), run(base, **batch), TRANSFORMERS_TOL)


@pytest.mark.parametrize("family,dtype", FAMILIES)
@pytest.mark.parametrize("flash_kwargs", [False, True])
def test_packed_images_equal_each_sample_alone(family, dtype, flash_kwargs):
    model = build_multimodal(family, dtype)
    sp_kernels.kernelize(model)
    samples = [image_sample(5, 7, seed=0, dtype=dtype), image_sample(0, 3, grid=(1, 4, 8), seed=1, dtype=dtype),
               image_sample(2, 0, seed=2, dtype=dtype)]
    packed = pack_samples(model, samples)
    if flash_kwargs:  # what DataCollatorWithFlattening(return_flash_attn_kwargs=True) adds: it wins over detection
        lengths = [s["input_ids"].shape[1] for s in samples]
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
        packed.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max(lengths), max_length_k=max(lengths))
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    with torch.no_grad():
        together = model(**packed).logits
        alone = torch.cat([model(**s).logits for s in samples], dim=1)
    torch.testing.assert_close(together, alone, rtol=tol, atol=tol)


@pytest.mark.parametrize("family,dtype", FAMILIES)
def test_generate_with_an_image_matches_transformers(family, dtype):
    base = build_multimodal(family, dtype, use_cache=True)
    model = copy.deepcopy(base)
    sp_kernels.kernelize(model, mode="inference")
    sample = image_sample(3, 4, dtype=dtype)
    with torch.no_grad():  # decode steps: positions from mRoPE's rope deltas, the cache not packed
        assert torch.equal(model.generate(**sample, max_new_tokens=6, do_sample=False),
                           base.generate(**sample, max_new_tokens=6, do_sample=False))
