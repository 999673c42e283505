"""Sequence parallelism (Ulysses) below the model: the process group, the collectives, and how a sequence is laid out
over the ranks. Kernels never see communication: they take tensors and ints. Nothing here knows transformers or
kernelize (:mod:`sp_kernels.kernelize.sequence_parallel` is the model side).
"""
from sp_kernels.sp.comm import all_to_all, gather_sequence, sum_over_ranks
from sp_kernels.sp.group import SPGroup, resolve_group
from sp_kernels.sp.layout import local_slice, shift_left

__all__ = ["SPGroup", "all_to_all", "gather_sequence", "local_slice", "resolve_group", "shift_left", "sum_over_ranks"]
