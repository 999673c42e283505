"""Adapters: other packages' kernels (flash-linear-attention, torch_npu, MindSpeed, flash-attn) behind our contract."""
