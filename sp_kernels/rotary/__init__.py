"""Rotary position embedding (transformers' ``apply_rotary_pos_emb``, partial rotary included)."""
from dispatch import prefer, ub
from sp_kernels.rotary.api import apply_rotary_pos_emb

# the order of preference among the implementations that can run a call (reference: only when forced)
prefer("rotary", "torch_npu.npu_rotary_mul", "triton", "fla", "torch", "reference")

# the Unified Buffer models of our Triton kernels (coefficients: dispatch/data/ub_models.json)
ub.register("ours.rotary_fwd", "ours.rotary_bwd")
ub.register("ours.rotary_fwd", "ours.rotary_bwd", counted=True)

# each implementation registers itself in its own module
from sp_kernels.rotary import fla, naive, npu, torch_impl, triton  # noqa: E402,F401

__all__ = ["apply_rotary_pos_emb"]
