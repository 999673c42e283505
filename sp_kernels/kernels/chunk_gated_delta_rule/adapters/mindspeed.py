"""MindSpeed's Triton gated delta rule on Ascend NPUs (``mindspeed.core.ssm.npu_chunk_gated_delta_rule``).

Its contract is fla's with three limits: bf16/fp16 only; one value head per query/key head (grouped value heads
are served by repeating q and k, which gives the same result and gradients); no initial state on its Triton path
(MindSpeed would fall back to Megatron's torch code): calls with an initial state use our torch chunked
implementation instead, as ``explain`` says.
"""
from __future__ import annotations

import torch

from sp_kernels.dispatch.context import dtype_name

MODULE = "mindspeed.core.ssm.npu_chunk_gated_delta_rule"


def expand_groups(q: torch.Tensor, k: torch.Tensor, value_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, T, H, K]`` -> ``[B, T, HV, K]``: query/key head ``h`` serves value heads ``h*G .. h*G+G-1``."""
    groups = value_heads // q.shape[2]
    if groups == 1:
        return q, k
    return q.repeat_interleave(groups, dim=2), k.repeat_interleave(groups, dim=2)


def chunk_gated_delta_rule_mindspeed(q, k, v, g, beta, *, scale, initial_state, output_final_state, cu_seqlens,
                                     use_qk_l2norm_in_kernel):
    if initial_state is not None:
        from sp_kernels.kernels.chunk_gated_delta_rule.chunk import chunk_gated_delta_rule_torch

        return chunk_gated_delta_rule_torch(q, k, v, g, beta, scale=scale, initial_state=initial_state,
                                            output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                                            use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)
    import importlib

    ms = importlib.import_module(MODULE)
    q, k = expand_groups(q, k, v.shape[2])
    return ms.chunk_gated_delta_rule(q, k, v, g.to(q.dtype) if g.dtype != q.dtype else g, beta.to(q.dtype),
                                     scale=scale, initial_state=None, output_final_state=output_final_state,
                                     use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, cu_seqlens=cu_seqlens)


def supports_mindspeed(ctx) -> tuple[bool, str]:
    if ctx.dtype not in (torch.bfloat16, torch.float16):
        return False, f"MindSpeed's Triton gated delta rule takes bf16/fp16, not {dtype_name(ctx.dtype)}"
    return True, ""
