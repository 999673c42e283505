"""Autograd-aware collectives for Ulysses, on torch's functional collectives (``all_to_all_single_autograd``).

Every exchange here is one all-to-all: its backward is the inverse exchange, on any backend torch.distributed
offers (gloo in the tests, nccl, hccl).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol

from sp_kernels.sp.group import SPGroup


def _exchange(send: torch.Tensor, sp: SPGroup) -> torch.Tensor:
    """``send [n, ...]``: chunk ``i`` goes to rank ``i``; returns ``[n, ...]`` with chunk ``j`` from rank ``j``."""
    group = sp.group if sp.group is not None else dist.group.WORLD
    return funcol.wait_tensor(funcol.all_to_all_single_autograd(send, None, None, group))


def _from_every_rank(x: torch.Tensor, sp: SPGroup) -> torch.Tensor:
    """``[n, *x.shape]``: every rank's ``x``, in rank order (an all-to-all of ``n`` copies; its backward sums the
    gradients every rank computed for this rank's ``x``)."""
    return _exchange(x.unsqueeze(0).expand(sp.size, *x.shape).contiguous(), sp)


def all_to_all(x: torch.Tensor, scatter_dim: int, gather_dim: int, sp: SPGroup) -> torch.Tensor:
    """Split ``x`` in ``sp.size`` equal chunks along ``scatter_dim``, send chunk ``i`` to rank ``i``, and
    concatenate the chunks received from ranks ``0..size-1`` along ``gather_dim``. Its backward is the inverse
    exchange. E.g. ``[B, T/N, H, D]`` with ``scatter_dim=2, gather_dim=1`` -> ``[B, T, H/N, D]``.
    """
    n = sp.size
    if x.shape[scatter_dim] % n:
        raise ValueError(f"x: dimension {scatter_dim} of size {x.shape[scatter_dim]} does not split over {n} ranks")
    send = torch.stack(x.chunk(n, dim=scatter_dim))  # [n, *chunk]: contiguous, chunk i goes to rank i
    return torch.cat(_exchange(send, sp).unbind(0), dim=gather_dim)


def gather_sequence(x: torch.Tensor, dim: int, sp: SPGroup) -> torch.Tensor:
    """All-gather the sequence shards of ``x`` along ``dim`` (rank order).

    Backward sums, for this rank's shard, the gradients that every rank computed for it (a reduce-scatter, done
    as the backward of an all-to-all of ``size`` copies). When every rank computes the same loss from the gathered
    tensor — the SP contract — that is ``size`` times this rank's share, which the mean all-reduce of the
    gradients over the group divides out.
    """
    return torch.cat(_from_every_rank(x, sp).unbind(0), dim=dim)


def sum_over_ranks(x: torch.Tensor, sp: SPGroup) -> torch.Tensor:
    """The sum of ``x`` over the ranks of the group, on every rank (an all-reduce). Backward: each rank's ``x``
    receives the sum of the gradients of every rank's result, so when every rank backpropagates the same loss,
    ``size`` times its share — the SP gradient contract, as :func:`gather_sequence`."""
    return _from_every_rank(x, sp).sum(0)


def from_every_rank(x: torch.Tensor, sp: SPGroup) -> torch.Tensor:
    """``[n, *x.shape]``: every rank's ``x`` in rank order (an all-gather; backward sums, for this rank's ``x``, the
    gradients every rank computed for it — the SP gradient contract, as :func:`gather_sequence`)."""
    return _from_every_rank(x, sp)
