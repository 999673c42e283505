"""Tiny Qwen3.5 / Qwen3.5-MoE / Qwen3-Next models built from configs (no downloads)."""
import torch

from sp_kernels.demo import scramble_weights, tiny_qwen3_5_config

COMMON = dict(vocab_size=96, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
              head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
              linear_value_head_dim=16, linear_conv_kernel_dim=4, layer_types=["linear_attention", "full_attention"] * 2,
              use_cache=False)
MOE = dict(moe_intermediate_size=32, shared_expert_intermediate_size=32, num_experts=4, num_experts_per_tok=2)


def build(family: str, dtype=torch.float64, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    if family == "qwen3_5":
        from transformers import Qwen3_5ForCausalLM

        model = Qwen3_5ForCausalLM(tiny_qwen3_5_config(**overrides))
    elif family == "qwen3_5_moe":
        from transformers import Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig

        model = Qwen3_5MoeForCausalLM(Qwen3_5MoeTextConfig(**{**COMMON, **MOE, **overrides}))
    elif family == "qwen3_next":
        from transformers import Qwen3NextConfig, Qwen3NextForCausalLM

        model = Qwen3NextForCausalLM(Qwen3NextConfig(**{**COMMON, **MOE, "intermediate_size": 64, **overrides}))
    else:
        raise ValueError(family)
    return scramble_weights(model, seed=seed).to(dtype)


#: token ids of the tiny multimodal configs (inside the 96-token vocabulary)
IMAGE, VIDEO, VISION_START, VISION_END = 90, 91, 92, 93
VISION = dict(depth=1, hidden_size=32, num_heads=2, intermediate_size=64, patch_size=4, spatial_merge_size=2,
              temporal_patch_size=2, out_hidden_size=COMMON["hidden_size"], num_position_embeddings=64)
PATCH = 3 * 2 * 4 * 4  # in_channels * temporal_patch_size * patch_size**2


def build_multimodal(family: str, dtype=torch.float64, seed: int = 0, **text_overrides):
    """A tiny Qwen3_5ForConditionalGeneration / Qwen3_5MoeForConditionalGeneration (vision tower included)."""
    torch.manual_seed(seed)
    tokens = dict(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VISION_START,
                  vision_end_token_id=VISION_END)
    if family == "qwen3_5":
        from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

        text = {**COMMON, "intermediate_size": 128, **text_overrides}
        model = Qwen3_5ForConditionalGeneration(Qwen3_5Config(text_config=text, vision_config=VISION, **tokens))
    elif family == "qwen3_5_moe":
        from transformers import Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration

        text = {**COMMON, **MOE, **text_overrides}
        model = Qwen3_5MoeForConditionalGeneration(Qwen3_5MoeConfig(text_config=text, vision_config=VISION,
                                                                    **tokens))
    else:
        raise ValueError(family)
    return scramble_weights(model, seed=seed).to(dtype)


def image_sample(before: int, after: int, grid=(1, 4, 4), seed: int = 0, dtype=torch.float64) -> dict:
    """One sample with one image: text, <vision_start>, the image's tokens, <vision_end>, text (batch of 1)."""
    gen = torch.Generator().manual_seed(seed)
    n_image = grid[0] * grid[1] * grid[2] // 4  # spatial_merge_size 2
    ids = torch.cat([torch.randint(0, IMAGE, (before,), generator=gen), torch.tensor([VISION_START]),
                     torch.full((n_image,), IMAGE), torch.tensor([VISION_END]),
                     torch.randint(0, IMAGE, (after,), generator=gen)])[None]
    pixels = torch.randn(grid[0] * grid[1] * grid[2], PATCH, generator=gen, dtype=torch.float64).to(dtype)
    return dict(input_ids=ids, mm_token_type_ids=(ids == IMAGE).int(), pixel_values=pixels,
                image_grid_thw=torch.tensor([grid]))


def stack_samples(samples: list[dict]) -> dict:
    """Samples of one length as a batch of len(samples) rows."""
    return dict(input_ids=torch.cat([s["input_ids"] for s in samples]),
                mm_token_type_ids=torch.cat([s["mm_token_type_ids"] for s in samples]),
                pixel_values=torch.cat([s["pixel_values"] for s in samples]),
                image_grid_thw=torch.cat([s["image_grid_thw"] for s in samples]))


def pack_samples(model, samples: list[dict]) -> dict:
    """Samples packed into one row (padding-free), each with its own mRoPE positions restarting at 0 — what a
    multimodal flattening collator gives."""
    positions = [model.model.get_rope_index(s["input_ids"], image_grid_thw=s["image_grid_thw"],
                                            mm_token_type_ids=s["mm_token_type_ids"])[0] for s in samples]
    return dict(input_ids=torch.cat([s["input_ids"] for s in samples], dim=1),
                mm_token_type_ids=torch.cat([s["mm_token_type_ids"] for s in samples], dim=1),
                pixel_values=torch.cat([s["pixel_values"] for s in samples]),
                image_grid_thw=torch.cat([s["image_grid_thw"] for s in samples]),
                position_ids=torch.cat(positions, dim=-1))
