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


@pytest.mark.parametrize("kv,sp,replicas", [(4, 2, 1), (4, 4, 1), (2, 4, 2), (1, 4, 4), (2, 8, 4), (8, 8, 1)])
def test_key_value_heads_are_copied_when_they_divide_sp_size(kv, sp, replicas):
    from sp_kernels._contexts import attention, kv_replicas

    assert kv_replicas(kv, sp) == replicas
    shapes, _ = attention(num_heads=16, num_kv_heads=kv, head_dim=8, sp_size=sp)["fusion_attention"]
    assert (shapes["H"], shapes["HKV"]) == (16 // sp, kv * replicas // sp)


def test_head_counts_that_do_not_fit_are_errors_naming_them():
    from sp_kernels._contexts import attention

    with pytest.raises(ValueError, match=r"^sp_size: num_attention_heads=6 is not divisible by sp_size=4$"):
        attention(num_heads=6, num_kv_heads=2, head_dim=8, sp_size=4)
    with pytest.raises(ValueError, match=r"^sp_size: num_key_value_heads=3 neither divides by sp_size=4 nor "):
        attention(num_heads=12, num_kv_heads=3, head_dim=8, sp_size=4)
