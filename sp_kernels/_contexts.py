"""How calls and layers become a selection :class:`~sp_kernels.dispatch.Context` (the type itself is in
``sp_kernels/dispatch/context.py``):

- a public op call: :func:`choose` (the one place a call's context is made);
- a layer, for kernelize and explain: the shapes of a GatedDeltaNet layer and of an attention layer, and
  :class:`LayerContext`; and the rule of how a GatedDeltaNet layer runs under sequence parallelism
  (:func:`gated_deltanet_sp`).

Under sequence parallelism (Ulysses) each rank runs the kernels on ``heads / sp_size`` heads over the whole
sequence, so the shapes here are the local heads and the global length.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sp_kernels.dispatch import Context, DeviceProfile, detect, select


@functools.lru_cache(maxsize=None)
def _profile(device: torch.device) -> DeviceProfile:
    return detect(device)


def requires_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def choose(op: str, x: torch.Tensor | torch.device, shapes: dict, *, dtype: torch.dtype | None = None,
           packed: bool = False, grad: bool = False, options: dict | None = None, impl: str | None = None) -> str:
    """The name of the implementation the registry chooses for a call of ``op`` on ``x``'s device and dtype (or a
    device and ``dtype``); ``impl`` forces one. Under ``torch.compile`` it runs once per traced context (a constant
    in the graph)."""
    device, dtype = (x.device, x.dtype) if isinstance(x, torch.Tensor) else (x, dtype)
    return _chosen(op, device, dtype, tuple(shapes.items()), packed, grad, tuple((options or {}).items()), impl)


@torch._dynamo.assume_constant_result
def _chosen(op, device, dtype, shapes, packed, grad, options, impl) -> str:
    ctx = Context(op, _profile(device), dtype, dict(shapes), packed=packed, requires_grad=grad, options=dict(options))
    return select(op, ctx, force=impl).chosen.name


def _local(what: str, count: int, sp_size: int) -> int:
    if count % sp_size:
        raise ValueError(f"sp_size: {what}={count} is not divisible by sp_size={sp_size}")
    return count // sp_size


def kv_replicas(num_kv_heads: int, sp_size: int) -> int:
    """How many copies of each key/value attention head Ulysses makes so that every rank holds the one its query
    heads use: 1 when they divide by ``sp_size``, ``sp_size / num_kv_heads`` when they divide it (as verl and
    DeepSpeed do; the copies' gradients sum back)."""
    if num_kv_heads % sp_size == 0:
        return 1
    if sp_size % num_kv_heads == 0:
        return sp_size // num_kv_heads
    raise ValueError(f"sp_size: num_key_value_heads={num_kv_heads} neither divides by sp_size={sp_size} nor divides it "
                     "(key/value heads are replicated when they divide sp_size)")


#: how GatedDeltaNet layers run under sequence parallelism (None: chosen by :func:`gated_deltanet_sp`)
GDN_SP_MODES = (None, "ulysses", "context")

#: fwd+bwd seconds of both modes per device type and sp_size, from ``bench --op sp`` (written by
#: ``python bench/render.py bench/results/sp.json --sp-table``)
GDN_SP_MEASURED = Path(__file__).resolve().parent / "dispatch" / "data" / "gated_deltanet_sp.json"


@functools.cache
def _measured() -> dict:
    return json.loads(GDN_SP_MEASURED.read_text())


def gated_deltanet_sp(num_k_heads: int, num_v_heads: int, sp_size: int, choice: str | None = None, *,
                      device_type: str = "cpu", kept: str | None = None) -> tuple[str, str]:
    """``(mode, why)`` for a GatedDeltaNet layer under SP.

    - ``choice`` forces a mode (Ulysses still needs the linear heads to divide: the ValueError names them).
    - ``kept``: the delta rule a module marked ``_twinkle_npu_patched`` keeps. It has no context-parallel entry, so
      the layer runs Ulysses, and its heads must divide.
    - Otherwise ``"context"`` (state passing) where the heads do not divide by ``sp_size``; where they do, whichever
      ran the faster forward+backward in ``bench --op sp`` on this device type at this ``sp_size``, at the longest
      measured length (both modes' times grow linearly in T; only context parallelism's bytes do not); Ulysses
      where it was not measured.
    """
    if choice not in GDN_SP_MODES:
        raise ValueError(f"gated_deltanet_sp: expected one of {GDN_SP_MODES}, got {choice!r}")
    divides = num_k_heads % sp_size == 0 and num_v_heads % sp_size == 0
    heads = f"its heads ({num_k_heads} key / {num_v_heads} value)"
    if kept is not None:
        if choice == "context" or not divides:
            raise ValueError(
                f"{'gated_deltanet_sp' if choice == 'context' else 'sp_size'}: the module keeps its delta rule "
                f"{kept!r} (it is marked _twinkle_npu_patched), which has no context-parallel entry, so it runs by "
                f"Ulysses: {heads} must divide by sp_size={sp_size}"
                + ("" if divides else "; choose an sp_size that divides them, or kernelize without the marker"))
        return "ulysses", (f"its delta rule {kept} is kept (marked _twinkle_npu_patched) and has no context-parallel "
                           f"entry; {heads} divide by sp_size={sp_size}")
    if choice == "ulysses" or (choice is None and divides):
        _local("linear_num_key_heads", num_k_heads, sp_size)
        _local("linear_num_value_heads", num_v_heads, sp_size)
    if choice is not None:
        return choice, "forced"
    if not divides:
        return "context", (f"{heads} do not divide by sp_size={sp_size}: each rank runs its tokens, passing the "
                           "state to the next")
    cases = [c for c in _measured().get(device_type, {}).get("cases", []) if c["sp_size"] == sp_size]
    if not cases:
        return "ulysses", (f"{heads} divide by sp_size={sp_size}; context parallelism was not measured on "
                           f"{device_type} at this sp_size (bench --op sp), so Ulysses, which runs no extra pass")
    c = max(cases, key=lambda c: c["T"])
    mode = "context" if c["context_s"] < c["ulysses_s"] else "ulysses"
    return mode, (f"{heads} divide by sp_size={sp_size}; measured on {device_type} at T={c['T']} (bench --op sp), "
                  f"fwd+bwd {c['ulysses_s']:.2f} s by Ulysses vs {c['context_s']:.2f} s by context parallelism")


def gated_deltanet_sp_bytes(*, mode: str, sp_size: int, B: int, T: int, num_k_heads: int, num_v_heads: int,
                            head_k_dim: int, head_v_dim: int, conv_kernel: int, itemsize: int) -> int:
    """The bytes one rank sends to the others in one forward of a GatedDeltaNet layer (``bench --op sp`` counts
    them). Ulysses: two all-to-alls of ``[B, T/N, channels]`` (q, k, v, b, a in; the output back), all but this
    rank's ``1/N``. Context: the conv's last ``W - 1`` inputs and the fp32 ``[B, HV, K, V + K]`` transfer, to every
    other rank, whatever ``T``."""
    n = sp_size
    conv_dim = 2 * num_k_heads * head_k_dim + num_v_heads * head_v_dim
    if mode == "ulysses":
        per_token = conv_dim + 2 * num_v_heads + num_v_heads * head_v_dim
        return (n - 1) * B * (-(-T // n)) * per_token * itemsize // n
    transfer = B * num_v_heads * head_k_dim * (head_v_dim + head_k_dim) * 4
    return (n - 1) * (B * (conv_kernel - 1) * conv_dim * itemsize + transfer)


def _seq(B, T) -> dict:
    return {k: v for k, v in (("B", B), ("T", T)) if v is not None}


def gated_deltanet(*, num_k_heads: int, num_v_heads: int, head_k_dim: int, head_v_dim: int, conv_kernel: int,
                   activation: str | None, sp_size: int = 1, B: int | None = None, T: int | None = None,
                   sp_mode: str = "ulysses") -> dict:
    """``{op: (shapes, options)}`` for the conv and the delta rule of one GatedDeltaNet layer. Under SP (``sp_size >
    1``) the options say how the layer runs (``"sp_mode"``: ``"ulysses"``, local heads over the global length ``T``, or
    ``"context"``, all heads over this rank's ``ceil(T / sp_size)`` tokens)."""
    context = sp_size > 1 and sp_mode == "context"
    h = num_k_heads if context else _local("linear_num_key_heads", num_k_heads, sp_size)
    hv = num_v_heads if context else _local("linear_num_value_heads", num_v_heads, sp_size)
    T = -(-T // sp_size) if context and T is not None else T
    sp = {"sp_mode": sp_mode} if sp_size > 1 else {}
    return {
        "causal_conv1d": ({**_seq(B, T), "D": 2 * h * head_k_dim + hv * head_v_dim, "W": conv_kernel},
                          {"activation": activation, **sp}),
        "chunk_gated_delta_rule": ({**_seq(B, T), "H": h, "HV": hv, "K": head_k_dim, "V": head_v_dim}, sp),
    }


def attention(*, num_heads: int, num_kv_heads: int, head_dim: int, rotary_dim: int | None = None,
              sp_size: int = 1, B: int | None = None, T: int | None = None) -> dict:
    """``{op: (shapes, options)}`` for the rotary embedding and the attention of one attention layer."""
    h = _local("num_attention_heads", num_heads, sp_size)
    hkv = num_kv_heads * kv_replicas(num_kv_heads, sp_size) // sp_size
    rotary = {**_seq(B, T), "H": h, "HK": hkv, "D": head_dim}
    if rotary_dim is not None:
        rotary["R"] = rotary_dim
    seq = {} if T is None else {"TQ": T, "TK": T}
    return {
        "apply_rotary_pos_emb": (rotary, {}),
        "fusion_attention": ({**_seq(B, None), **seq, "H": h, "HKV": hkv, "D": head_dim, "DV": head_dim},
                             {"causal": True}),
    }


def with_length(op: str, shapes: dict, T: int | None) -> dict:
    """``shapes`` with the sequence length of one call added (``TQ``/``TK`` for attention)."""
    if T is None:
        return dict(shapes)
    return {**shapes, **({"TQ": T, "TK": T} if op == "fusion_attention" else {"T": T})}


@dataclass(frozen=True)
class LayerContext:
    """The selection context of one op of one layer, for a call's ``(packed, T)`` (a value, so bindings copy)."""

    op: str
    device: DeviceProfile
    dtype: torch.dtype
    shapes: dict = field(hash=False)
    options: dict = field(hash=False)
    sp_size: int
    requires_grad: bool

    def __call__(self, packed: bool, T: int | None) -> Context:
        return Context(self.op, self.device, self.dtype, with_length(self.op, self.shapes, T),
                       packed=packed, sp_size=self.sp_size, requires_grad=self.requires_grad, options=self.options)


def sp_sizes(*, num_heads: int, num_kv_heads: int, linear_num_key_heads: int, linear_num_value_heads: int,
             candidates=(2, 4, 8, 16)) -> tuple[int, ...]:
    """The sequence-parallel degrees among ``candidates`` whose head rules a model's layers meet, by the same
    checks kernelize makes: attention by Ulysses; GatedDeltaNet by Ulysses where its heads divide, else by context
    parallelism (any heads)."""
    fits = []
    for sp_size in candidates:
        try:
            attention(num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=128, sp_size=sp_size)
            mode, _ = gated_deltanet_sp(linear_num_key_heads, linear_num_value_heads, sp_size)
            gated_deltanet(num_k_heads=linear_num_key_heads, num_v_heads=linear_num_value_heads, head_k_dim=128,
                           head_v_dim=128, conv_kernel=4, activation="silu", sp_size=sp_size, sp_mode=mode)
        except ValueError:
            continue
        fits.append(sp_size)
    return tuple(fits)
