"""Depthwise causal 1-D convolution (the short conv in front of the delta rule)."""
from dispatch import prefer
from sp_kernels.causal_conv1d.api import causal_conv1d

# the order of preference among the implementations that can run a call (reference: only when forced)
prefer("causal_conv1d", "triton", "fla", "torch", "reference")

# each implementation registers itself in its own module
from sp_kernels.causal_conv1d import fla, naive, torch_impl, triton  # noqa: E402,F401

__all__ = ["causal_conv1d"]
