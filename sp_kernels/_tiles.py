"""Small pure helpers shared by the tile plans of the Triton implementations (``<op>/triton_plan.py``): no triton."""
from __future__ import annotations

import torch

from sp_kernels.dispatch.context import dtype_name
from sp_kernels.dispatch.devices import DeviceProfile

#: Triton's names of the dtypes our kernels take
DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
#: the length assumed when a context does not give one: a long sequence
UNKNOWN_T = 1 << 20


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def check_dtype(dtype: torch.dtype) -> tuple[bool, str]:
    """``supports``' dtype check: our kernels take bf16, fp16 and fp32."""
    if dtype not in DTYPE_NAMES:
        return False, f"Triton kernels take bf16/fp16/fp32, not {dtype_name(dtype)}"
    return True, ""


def model_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the UB / shared-memory models are asked about (any other dtype is costed as fp32)."""
    return dtype if dtype in DTYPE_NAMES else torch.float32


def grid(profile: DeviceProfile, items: int) -> int:
    """Programs for ``items`` work items: persistent on an NPU (one per vector core, each looping over items), a few
    on the CPU interpreter (so that the loop is exercised), one per item elsewhere; within the grid cap."""
    items = max(1, int(items))
    if profile.type == "npu":
        return min(items, profile.vector_cores or 1, profile.max_grid or items)
    if profile.type == "cpu":
        return min(items, 3)
    return min(items, profile.max_grid or items)
