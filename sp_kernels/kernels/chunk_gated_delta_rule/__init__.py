"""Gated delta rule (the Gated DeltaNet token mixer): ``chunk_gated_delta_rule``."""
from sp_kernels.dispatch import prefer, ub
from sp_kernels.kernels.chunk_gated_delta_rule.api import chunk_gated_delta_rule

# the order of preference among the implementations that can run a call (reference: only when forced)
prefer("chunk_gated_delta_rule", "mindspeed", "fla_fused_recurrent", "fla", "triton", "torch_recurrent", "torch",
       "reference")

# the Unified Buffer model of our Triton kernel (coefficients: sp_kernels/dispatch/data/ub_models.json)
ub.register("ours.fused_recurrent_gated_delta_rule_fwd")
ub.register("ours.fused_recurrent_gated_delta_rule_fwd", counted=True)

# each implementation registers itself in its own module
from sp_kernels.kernels.chunk_gated_delta_rule import chunk, fla, mindspeed, naive, recurrent, triton  # noqa: E402,F401

__all__ = ["chunk_gated_delta_rule"]
