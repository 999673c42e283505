"""Sequence parallelism (Ulysses): the process group, the collectives, and the batch sharding around a model.

Kernels never see communication: they take tensors and ints. Everything that talks to other ranks is here.
"""
from sp_kernels.sp.comm import all_to_all, gather_sequence, sum_over_ranks
from sp_kernels.sp.group import SPGroup, resolve_group
from sp_kernels.sp.tensors import sp_gather, sp_slice

__all__ = ["SPGroup", "all_to_all", "gather_sequence", "resolve_group", "sp_gather", "sp_slice", "sum_over_ranks"]
