"""torch_npu's ``npu_rotary_mul`` (half mode: ``r1 * x + r2 * rotate_half(x)``). It has no partial rotary: the
rotary part ``x[..., :R]`` goes through it and the tail passes through."""
from __future__ import annotations

import torch



def rotary_mul_args(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int):
    """``(x_rot, tail, r1, r2)``: the 4-D inputs ``npu_rotary_mul`` takes (x in BNSD or BSND; r1/r2 B1SD / BS1D)."""
    R = cos.shape[-1]
    return x[..., :R], x[..., R:], cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)


def apply_rotary_pos_emb_npu(q, k, cos, sin, unsqueeze_dim=1):
    """Validated arguments as :func:`sp_kernels.apply_rotary_pos_emb`."""
    import torch_npu

    out_dtype = torch.promote_types(q.dtype, cos.dtype)

    def rotate(x):
        x_rot, tail, r1, r2 = rotary_mul_args(x.to(out_dtype), cos.to(out_dtype), sin.to(out_dtype), unsqueeze_dim)
        y = torch_npu.npu_rotary_mul(x_rot, r1, r2)
        return torch.cat([y, tail], dim=-1) if tail.shape[-1] else y

    return rotate(q), rotate(k)


def supports_npu_rotary(ctx) -> tuple[bool, str]:
    """npu_rotary_mul limits (A2/A3, half mode): rotary dim even and < 896, batch and heads < 1000."""
    s = ctx.shapes
    R = s.get("R", s.get("D"))
    if R is None or R % 2 or R >= 896:
        return False, f"npu_rotary_mul needs an even rotary dim < 896, got R={R}"
    for name in ("B", "H", "HK"):
        if s.get(name, 0) >= 1000:
            return False, f"npu_rotary_mul needs {name} < 1000, got {s[name]}"
    return True, ""
