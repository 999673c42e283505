"""Per-device kernels for Gated DeltaNet models (Qwen3.5, Qwen3-Next) with sequence-parallel-aware dispatch.

Public ops (each validated, then dispatched by the registry in :mod:`sp_kernels.dispatch`)::

    chunk_gated_delta_rule, causal_conv1d, apply_rotary_pos_emb, fusion_attention

and :func:`kernelize` / :func:`unkernelize` for transformers models; under sequence parallelism :func:`sp_slice`
(this rank's slice of a full-sequence tensor) and :func:`sp_gather` (per-token results back to the whole sequence).
"""
from sp_kernels.kernels.chunk_gated_delta_rule import chunk_gated_delta_rule
from sp_kernels.kernels.causal_conv1d import causal_conv1d
from sp_kernels.kernels.apply_rotary_pos_emb import apply_rotary_pos_emb
from sp_kernels.kernels.fusion_attention import fusion_attention
from sp_kernels.kernelize import NPU_MARKER, KernelizeReport, kernelize, unkernelize
from sp_kernels.kernelize.sequence_parallel import sp_gather, sp_slice

__version__ = "0.1.0"

__all__ = [
    "NPU_MARKER",
    "KernelizeReport",
    "apply_rotary_pos_emb",
    "causal_conv1d",
    "chunk_gated_delta_rule",
    "fusion_attention",
    "kernelize",
    "sp_gather",
    "sp_slice",
    "unkernelize",
]
