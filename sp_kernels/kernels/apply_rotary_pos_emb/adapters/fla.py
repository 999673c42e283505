"""flash-linear-attention's rotary (Triton). It takes half-width ``cos``/``sin`` ``[T, R/2]`` shared by the
batch and ``[B, T, H, D]`` inputs; transformers gives full-width ``[B, T, R]`` (two equal halves)."""
from __future__ import annotations

import warnings

import torch



def half_width(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | str:
    """``[B, T, R]`` -> ``[T, R/2]`` when that loses nothing, else the reason it would."""
    if cos.shape[0] > 1 and not (torch.equal(cos, cos[:1].expand_as(cos)) and torch.equal(sin, sin[:1].expand_as(sin))):
        return "positions differ across the batch (fla's rotary shares cos/sin over it)"
    half = cos.shape[-1] // 2
    c, s = cos[0], sin[0]
    if not (torch.equal(c[:, :half], c[:, half:]) and torch.equal(s[:, :half], s[:, half:])):
        return "cos/sin halves differ (not the rotate_half layout fla computes)"
    return c[:, :half].contiguous(), s[:, :half].contiguous()


def apply_rotary_pos_emb_fla(q, k, cos, sin, unsqueeze_dim=1):
    """Validated arguments as :func:`sp_kernels.apply_rotary_pos_emb`."""
    from fla.modules.rotary import rotary_embedding

    halves = half_width(cos, sin)
    if isinstance(halves, str):
        from sp_kernels.kernels.apply_rotary_pos_emb.torch_impl import rotary_torch

        warnings.warn(f"rotary: fla cannot take these cos/sin ({halves}); using the torch implementation")
        return rotary_torch(q, k, cos, sin, unsqueeze_dim=unsqueeze_dim)
    c, s = halves
    out_dtype = torch.promote_types(q.dtype, cos.dtype)  # transformers' result dtype

    def rotate(x):
        x = x.transpose(1, 2) if unsqueeze_dim == 1 else x  # -> [B, T, H, D]
        y = rotary_embedding(x.to(out_dtype), c.to(out_dtype), s.to(out_dtype))
        return y.transpose(1, 2) if unsqueeze_dim == 1 else y

    return rotate(q), rotate(k)
