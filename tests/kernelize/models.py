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
