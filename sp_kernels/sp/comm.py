"""Autograd-aware collectives for Ulysses, built on ``torch.distributed.nn.functional.all_to_all_single``."""
from __future__ import annotations

import torch
import torch.distributed.nn.functional as dist_fn

from sp_kernels.sp.group import SPGroup


def all_to_all(x: torch.Tensor, scatter_dim: int, gather_dim: int, sp: SPGroup) -> torch.Tensor:
    """Split ``x`` in ``sp.size`` equal chunks along ``scatter_dim``, send chunk ``i`` to rank ``i``, and
    concatenate the chunks received from ranks ``0..size-1`` along ``gather_dim``. Its backward is the inverse
    exchange. E.g. ``[B, T/N, H, D]`` with ``scatter_dim=2, gather_dim=1`` -> ``[B, T, H/N, D]``.
    """
    n = sp.size
    if x.shape[scatter_dim] % n:
        raise ValueError(f"x: dimension {scatter_dim} of size {x.shape[scatter_dim]} does not split over {n} ranks")
    send = torch.stack(x.chunk(n, dim=scatter_dim))  # [n, *chunk]: contiguous, chunk i goes to rank i
    recv = dist_fn.all_to_all_single(torch.empty_like(send), send, group=sp.group)
    return torch.cat(recv.unbind(0), dim=gather_dim)


def gather_sequence(x: torch.Tensor, dim: int, sp: SPGroup) -> torch.Tensor:
    """All-gather the sequence shards of ``x`` along ``dim`` (rank order).

    Backward sums, for this rank's shard, the gradients that every rank computed for it (a reduce-scatter, done
    as the backward of an all-to-all of ``size`` copies). When every rank computes the same loss from the gathered
    tensor — the SP contract — that is ``size`` times this rank's share, which the mean all-reduce of the
    gradients over the group divides out.
    """
    copies = x.unsqueeze(0).expand(sp.size, *x.shape)
    recv = dist_fn.all_to_all_single(torch.empty_like(copies), copies.contiguous(), group=sp.group)
    return torch.cat(recv.unbind(0), dim=dim)
