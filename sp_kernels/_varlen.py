"""Packed (varlen) batches: the sequences of a batch (the Triton launchers' work lists) and the packed <-> padded
conversion the torch implementations use.

A packed batch is ``[1, T, ...]`` with ``cu_seqlens = [0, t1, t1 + t2, ..., T]``. Padding it into
``[N, L, ...]`` (zeros after each sequence, ``L`` a multiple of ``multiple``) lets batched code run every
sequence at once while no sequence sees another one's tokens.
"""
from __future__ import annotations

import torch


def lengths(cu_seqlens: torch.Tensor) -> list[int]:
    return (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()


def sequences(B: int, T: int, cu_seqlens: torch.Tensor | None) -> tuple[list[int], list[int]]:
    """``(starts, lengths)``: every sequence's first token (counted over the ``B * T`` rows) and its length; the
    sequences are the batch rows, or the packed sequences of ``cu_seqlens`` (``B == 1``)."""
    if cu_seqlens is None:
        return [b * T for b in range(B)], [T] * B
    cu = cu_seqlens.tolist()
    return cu[:-1], [e - s for s, e in zip(cu[:-1], cu[1:])]


def _index(cu_seqlens: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    lens = lengths(cu_seqlens)
    n = len(lens)
    longest = max(lens) if lens else 0
    padded = max(multiple, -(-longest // multiple) * multiple)
    starts = torch.arange(n, device=cu_seqlens.device) * padded
    seq_of_token = torch.repeat_interleave(
        torch.arange(n, device=cu_seqlens.device), torch.tensor(lens, device=cu_seqlens.device)
    )
    pos = torch.arange(int(cu_seqlens[-1]), device=cu_seqlens.device) - cu_seqlens[seq_of_token]
    return starts[seq_of_token] + pos, n, padded


def pad(x: torch.Tensor, cu_seqlens: torch.Tensor, multiple: int = 1) -> torch.Tensor:
    """``[T, ...]`` packed tokens -> ``[N, L, ...]`` zero-padded (differentiable)."""
    idx, n, length = _index(cu_seqlens, multiple)
    out = x.new_zeros((n * length,) + tuple(x.shape[1:]))
    return out.index_copy(0, idx, x).view((n, length) + tuple(x.shape[1:]))


def unpad(x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """``[N, L, ...]`` padded -> ``[T, ...]`` packed tokens (differentiable)."""
    idx, _, _ = _index(cu_seqlens, x.shape[1])
    return x.reshape((-1,) + tuple(x.shape[2:])).index_select(0, idx)
