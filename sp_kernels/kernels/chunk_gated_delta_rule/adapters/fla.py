"""flash-linear-attention's gated delta rule (chunked; fused recurrent for decoding). Every argument by keyword:
fla's positional orders differ from ours (``fused_recurrent_gated_delta_rule`` takes ``gk``/``gv`` before ``beta``).
"""
from __future__ import annotations



def chunk_gated_delta_rule_fla(q, k, v, g, beta, *, scale, initial_state, output_final_state, cu_seqlens,
                               use_qk_l2norm_in_kernel):
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    return chunk_gated_delta_rule(q=q, k=k, v=v, g=g, beta=beta, scale=scale, initial_state=initial_state,
                                  output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                                  use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)


def fused_recurrent_gated_delta_rule_fla(q, k, v, g, beta, *, scale, initial_state, output_final_state, cu_seqlens,
                                         use_qk_l2norm_in_kernel):
    from fla.ops.gated_delta_rule import fused_recurrent_gated_delta_rule

    return fused_recurrent_gated_delta_rule(q=q, k=k, v=v, g=g, beta=beta, scale=scale, initial_state=initial_state,
                                            output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                                            use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)


def supports_fused_recurrent(ctx) -> tuple[bool, str]:
    """fla's fused recurrent kernel has no backward; it is the decoding kernel (short sequences)."""
    from sp_kernels._fla import fla_usable

    if ctx.requires_grad:
        return False, "forward only (fla raises in its backward): use the chunked form for training"
    T = ctx.shapes.get("T")
    if T is None or T > 64:
        return False, f"for decoding / short sequences (T <= 64), got T={T if T is not None else 'unknown'}"
    return fla_usable(ctx.device.type, ctx.op)
