"""Depthwise causal 1-D convolution (the short conv in front of the delta rule)."""
from sp_kernels.dispatch import prefer, ub
from sp_kernels.kernels.causal_conv1d.api import causal_conv1d

# the order of preference among the implementations that can run a call (reference: only when forced)
prefer("causal_conv1d", "triton", "fla", "torch", "reference")

# the Unified Buffer models of our Triton kernels (coefficients: sp_kernels/dispatch/data/ub_models.json); fla's in fla.py
ub.register("ours.causal_conv1d_fwd", "ours.causal_conv1d_bwd")
ub.register("ours.causal_conv1d_fwd", "ours.causal_conv1d_bwd", counted=True)

# each implementation registers itself in its own module
from sp_kernels.kernels.causal_conv1d import fla, naive, torch_impl, triton  # noqa: E402,F401

__all__ = ["causal_conv1d"]
