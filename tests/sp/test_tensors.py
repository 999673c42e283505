"""Which slice of a full-sequence tensor a rank holds, and the shift of labels over the global sequence."""
import pytest
import torch

import sp_kernels
from sp_kernels.sp.group import SPGroup
from sp_kernels.sp.layout import local_slice, shift_left
from tests.kernelize.models import build


def test_labels_shift_over_the_whole_sequence_before_sharding():
    labels = torch.arange(10)[None]  # T=10 over 4 ranks: padded to 12, shards of 3
    shifted = shift_left(labels)
    assert shifted.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9, -100]]
    shards = [local_slice(shifted, 1, SPGroup(None, 4, r), -100) for r in range(4)]
    assert [s.tolist()[0] for s in shards] == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [-100, -100, -100]]
    # the last token of rank 0's shard (token 2) predicts the first token of rank 1's shard (token 3)
    assert shards[0][0, -1] == labels[0, 3]


def test_slices_along_any_dim_cover_the_sequence_once():
    x = torch.randn(2, 3, 7)
    parts = [local_slice(x, -1, SPGroup(None, 2, r)) for r in range(2)]
    assert all(p.shape == (2, 3, 4) for p in parts)
    torch.testing.assert_close(torch.cat(parts, dim=-1)[..., :7], x, rtol=0, atol=0)
    assert torch.equal(parts[1][..., -1], torch.zeros(2, 3))  # the padding
    torch.testing.assert_close(shift_left(x, dim=-1, fill=0.0)[..., :6], x[..., 1:], rtol=0, atol=0)


def test_sp_slice_needs_a_model_kernelized_for_sp():
    model = build("qwen3_5")
    with pytest.raises(ValueError, match=r"model: not kernelized with sp_size > 1"):
        sp_kernels.sp_slice(model, torch.zeros(1, 5))
    sp_kernels.kernelize(model)
    with pytest.raises(ValueError, match=r"model: not kernelized with sp_size > 1"):
        sp_kernels.sp_gather(model, torch.zeros(1, 5))
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        sp_kernels.sp_slice("model", torch.zeros(1, 5))


def test_gather_logits_needs_sp():
    with pytest.raises(ValueError, match="gather_logits: only with sp_size > 1"):
        sp_kernels.kernelize(build("qwen3_5"), gather_logits=True)
    with pytest.raises(TypeError, match="gather_logits: expected a bool"):
        sp_kernels.kernelize(build("qwen3_5"), gather_logits=1)
