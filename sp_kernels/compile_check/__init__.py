"""Offline proof that the Triton kernels the dispatcher can launch compile and fit the hardware.

No GPU or NPU is needed: triton compiles for CUDA sm_90 on any machine, and triton-ascend's bishengir plans the
Ascend Unified Buffer on any machine (its last, CANN-only step fails here, after UB planning).
"""
