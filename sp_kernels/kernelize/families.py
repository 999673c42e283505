"""The transformers model families kernelize knows, matched by class (isinstance), never by name strings.

Each family names its GatedDeltaNet and attention classes and how its GatedDeltaNet projects hidden states
into ``(mixed_qkv, z, b, a)`` — the only part of the forward that differs between Qwen3.5 and Qwen3-Next.
A family whose transformers module cannot be imported is listed with the reason, not skipped silently.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Callable

import torch


def _project_qwen3_5(module, hidden_states: torch.Tensor):
    """Qwen3.5 (dense and MoE): separate projections, ``mixed_qkv`` is ``[q | k | v]`` along channels."""
    B, T, _ = hidden_states.shape
    mixed_qkv = module.in_proj_qkv(hidden_states)
    z = module.in_proj_z(hidden_states).reshape(B, T, -1, module.head_v_dim)
    return mixed_qkv, z, module.in_proj_b(hidden_states), module.in_proj_a(hidden_states)


def _project_qwen3_next(module, hidden_states: torch.Tensor):
    """Qwen3-Next: fused qkvz / ba projections grouped per key head, reordered by the module's own method."""
    query, key, value, z, b, a = module.fix_query_key_value_ordering(
        module.in_proj_qkvz(hidden_states), module.in_proj_ba(hidden_states)
    )
    query, key, value = (x.reshape(x.shape[0], x.shape[1], -1) for x in (query, key, value))
    return torch.cat((query, key, value), dim=-1), z, b, a


@dataclass(frozen=True)
class Family:
    name: str
    module: str  # transformers module holding the classes
    gated_deltanet: str
    attention: str
    text_model: str
    heads: tuple[str, ...]  # the causal-LM modules (lm_head + loss) over the text model
    project: Callable


FAMILIES = (
    Family("qwen3_5", "transformers.models.qwen3_5.modeling_qwen3_5", "Qwen3_5GatedDeltaNet", "Qwen3_5Attention",
           "Qwen3_5TextModel", ("Qwen3_5ForCausalLM", "Qwen3_5ForConditionalGeneration"), _project_qwen3_5),
    Family("qwen3_5_moe", "transformers.models.qwen3_5_moe.modeling_qwen3_5_moe", "Qwen3_5MoeGatedDeltaNet",
           "Qwen3_5MoeAttention", "Qwen3_5MoeTextModel",
           ("Qwen3_5MoeForCausalLM", "Qwen3_5MoeForConditionalGeneration"), _project_qwen3_5),
    Family("qwen3_next", "transformers.models.qwen3_next.modeling_qwen3_next", "Qwen3NextGatedDeltaNet",
           "Qwen3NextAttention", "Qwen3NextModel", ("Qwen3NextForCausalLM",), _project_qwen3_next),
)


@dataclass(frozen=True)
class LoadedFamily:
    family: Family
    gated_deltanet: type
    attention: type
    text_model: type
    heads: tuple[type, ...]
    modeling: object  # the transformers module (eager_attention_forward lives there)


@functools.lru_cache(maxsize=None)
def load_families() -> tuple[tuple[LoadedFamily, ...], tuple[tuple[str, str], ...]]:
    """``(loaded, unavailable)``: the families importable from this transformers, and why the others are not.

    A class missing from an importable module is an error (the family table is out of date), not a skip.
    """
    loaded, unavailable = [], []
    for fam in FAMILIES:
        try:
            mod = importlib.import_module(fam.module)
        except Exception as exc:
            unavailable.append((fam.name, f"{type(exc).__name__}: {exc}".splitlines()[0]))
            continue
        for attr in (fam.gated_deltanet, fam.attention, fam.text_model, *fam.heads):
            if not hasattr(mod, attr):
                raise RuntimeError(f"{fam.module} has no {attr}: this transformers version is not supported")
        classes = [getattr(mod, attr) for attr in (fam.gated_deltanet, fam.attention, fam.text_model)]
        loaded.append(LoadedFamily(fam, *classes, tuple(getattr(mod, h) for h in fam.heads), mod))
    return tuple(loaded), tuple(unavailable)
