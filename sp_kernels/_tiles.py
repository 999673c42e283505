"""Small pure helpers shared by the tile choices of the Triton implementations."""
from __future__ import annotations

import torch

#: Triton's names of the dtypes our kernels take
DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
#: the length assumed when a context does not give one: a long sequence
UNKNOWN_T = 1 << 20


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
