"""Rotary position embedding (transformers' ``apply_rotary_pos_emb``, partial rotary included)."""
from sp_kernels.dispatch import prefer, ub
from sp_kernels.kernels.apply_rotary_pos_emb.api import apply_rotary_pos_emb

# the order of preference among the implementations that can run a call (reference: only when forced)
prefer("apply_rotary_pos_emb", "torch_npu.npu_rotary_mul", "triton", "fla", "torch", "reference")

# the Unified Buffer models of our Triton kernels (coefficients: sp_kernels/dispatch/data/ub_models.json)
ub.register("ours.rotary_fwd", "ours.rotary_bwd")
ub.register("ours.rotary_fwd", "ours.rotary_bwd", counted=True)

# each implementation registers itself in its own module
from sp_kernels.kernels.apply_rotary_pos_emb import fla, naive, npu, torch_impl, triton  # noqa: E402,F401

__all__ = ["apply_rotary_pos_emb"]
