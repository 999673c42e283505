"""``kernelize(model)``: bind the registry's implementations to a transformers model's modules, in place.

Per GatedDeltaNet module (conv + delta rule) and per attention module (rotary + attention) the registry chooses
an implementation for the device; the module gets a forward that calls exactly those (``unkernelize`` restores
transformers' forward). A forward pre-hook on each text model turns packed batches (``position_ids`` restarting at
0) into ``cu_seqlens``. Modules bound to NPU-specific implementations are marked ``_twinkle_npu_patched = True``,
the marker the sequence-parallel path reads to keep them.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from sp_kernels.dispatch import OPS, DeviceProfile, check_impl_name, resolve_profile
from sp_kernels import _contexts
from sp_kernels.kernelize import compat
from sp_kernels.kernelize.attention import attention_forward
from sp_kernels.kernelize.batch import PackedBatchHook, register_for_export
from sp_kernels._contexts import LayerContext
from sp_kernels.kernelize.bindings import ModuleBinding, OpBinding
from sp_kernels.kernelize.families import load_families
from sp_kernels.kernelize.gated_deltanet import GDNContext, GDNShard, gated_deltanet_forward
from sp_kernels.kernelize import sequence_parallel as sp_hooks
from sp_kernels.kernelize.sequence_parallel import SP_GROUP
from sp_kernels.sp.group import resolve_group

NPU_MARKER = "_twinkle_npu_patched"
_BINDING = "_sp_kernels"
_HOOK = "_sp_kernels_hook"
MODES = ("train", "inference")
#: the forward kernelize installs per kind of module
FORWARDS = {"gated_deltanet": gated_deltanet_forward, "attention": attention_forward}


@dataclass(frozen=True)
class PatchedModule:
    name: str
    cls: str
    family: str
    ops: dict  # op -> implementation description
    npu_patched: bool
    sp: str = "-"  # under sequence parallelism: "ulysses" (heads) or "context" (state passing)


@dataclass(frozen=True)
class KernelizeReport:
    """What kernelize bound (``modules``; ``print(report)`` is the dispatch table) and where this rank stands:
    ``dp_rank`` / ``dp_size`` are this rank's data-parallel position — which of the world's SP groups it is in and
    how many there are, what a sampler takes (``DistributedSampler(data, num_replicas=dp_size, rank=dp_rank)``); with
    ``sp_size=1`` the world's rank and size. ``None`` when the SP group was given as a bare process group, whose
    siblings kernelize cannot see (give the DeviceMesh instead)."""

    device: DeviceProfile
    sp_size: int
    mode: str
    modules: tuple[PatchedModule, ...]
    dp_rank: int | None = 0
    dp_size: int | None = 1

    def table(self) -> str:
        """The dispatch table: one row per patched module, one column per op."""
        header = ["module", *OPS, NPU_MARKER] + ["sp"] * (self.sp_size > 1)
        rows = [[m.name, *(m.ops.get(op, "-") for op in OPS), str(m.npu_patched)] + [m.sp] * (self.sp_size > 1)
                for m in self.modules]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [f"device {self.device.describe()} | sp_size {self.sp_size} | mode {self.mode}", fmt.format(*header)]
        lines += [fmt.format(*r) for r in rows]
        return "\n".join(line.rstrip() for line in lines)

    __str__ = table


def kernelize(model: torch.nn.Module, sp_size: int = 1, *, group=None, device=None, mode: str = "train",
              force: dict | None = None, gather_logits: bool = False,
              gated_deltanet_sp: str | None = None) -> KernelizeReport:
    """Patch ``model`` in place; returns a :class:`KernelizeReport`. Idempotent (re-binding replaces bindings).

    Args:
        model: a transformers Qwen3.5 (text or MoE) or Qwen3-Next model, or any module containing their layers.
        sp_size: sequence-parallel (Ulysses) degree: attention heads and the linear layers' key and value heads
            must divide by it; key/value attention heads too, or divide it (they are replicated). With
            ``sp_size > 1`` every rank of an SP group calls the model with the same full batch
            (docs/sequence-parallel.md).
        group: ``None``: the default group if it has ``sp_size`` ranks, else contiguous SP groups of ``sp_size``
            ranks (a ``("dp", "sp")`` DeviceMesh); a DeviceMesh with a dimension named ``"sp"``; or the process
            group (or one-dimensional DeviceMesh) of exactly ``sp_size`` ranks this rank runs in.
        device: ``None`` (the device of the model's parameters), a torch device, or a simulated profile such as
            ``'npu:Ascend910B3'`` (selection as on that device; the tensors stay where they are).
        mode: ``'train'`` (implementations must support backward) or ``'inference'``.
        force: ``{op: implementation name}``, as the ``impl=`` keyword of the ops.
        gather_logits: under SP, also all-gather the logits so that every rank gets ``[B, T, V]`` (the memory SP
            saves: without it ``out.logits`` is this rank's shard; the loss is the full sequence's either way).
        gated_deltanet_sp: how GatedDeltaNet layers run under SP: ``"ulysses"`` (heads; the linear heads must
            divide by ``sp_size``), ``"context"`` (state passing; any head counts), or ``None``: Ulysses where the
            heads divide, else context parallelism.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(sp_size, bool) or not isinstance(sp_size, int):
        raise TypeError(f"sp_size: expected an int, got {type(sp_size).__name__}")
    if sp_size < 1:
        raise ValueError(f"sp_size: expected >= 1, got {sp_size}")
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    force = _check_force(force)
    if group is not None and sp_size == 1:
        raise ValueError("group: a process group was given with sp_size=1; pass sp_size=<ranks in the group>")
    if not isinstance(gather_logits, bool):
        raise TypeError(f"gather_logits: expected a bool, got {type(gather_logits).__name__}")
    if gather_logits and sp_size == 1:
        raise ValueError("gather_logits: only with sp_size > 1 (with sp_size=1 the logits are whole already)")
    if gated_deltanet_sp not in _contexts.GDN_SP_MODES:
        raise ValueError(f"gated_deltanet_sp: expected one of {_contexts.GDN_SP_MODES}, got {gated_deltanet_sp!r}")
    if gated_deltanet_sp is not None and sp_size == 1:
        raise ValueError("gated_deltanet_sp: only with sp_size > 1")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    profile = resolve_profile(device)

    families, unavailable = load_families()
    found = []
    for name, module in model.named_modules():
        for fam in families:
            if isinstance(module, fam.gated_deltanet):
                found.append((name, module, fam, "gated_deltanet"))
            elif isinstance(module, fam.attention):
                found.append((name, module, fam, "attention"))
    if not found:
        known = ", ".join(f"{f.family.name} ({f.gated_deltanet.__name__}, {f.attention.__name__})" for f in families)
        missing = "".join(f"; unavailable: {n} ({why})" for n, why in unavailable)
        raise ValueError(f"model: {type(model).__name__} has no module kernelize supports; supported: {known}{missing}")

    sp_modes = {}
    for name, module, _, kind in found:  # heads must divide by sp_size: checked before anything else about SP
        compat.check_hub_kernels(name, module)
        if kind == "gated_deltanet" and sp_size > 1:
            sp_modes[name] = _contexts.gated_deltanet_sp(
                module.num_k_heads, module.num_v_heads, sp_size, gated_deltanet_sp, device_type=profile.type,
                kept=_kept_delta_rule(name, module))[0]
        _layer_contexts(module, kind, sp_size, sp_modes.get(name))
    for cls, kind in dict.fromkeys((type(module), kind) for _, module, _, kind in found):
        compat.check_forward(cls, FORWARDS[kind])  # transformers' forward has nothing ours would drop
    if sp_size > 1:
        for fam in families:
            if any(isinstance(m, fam.text_model) for m in model.modules()):
                compat.check_forward(fam.text_model, sp_hooks.HANDLED, "the sequence-parallel pre-hook")
    tensors = next(model.parameters(), torch.empty(0)).device.type  # where the collectives run (not simulated)
    sp = resolve_group(sp_size, group, tensors) if sp_size > 1 else None
    # Choose everything first: a failure leaves the model untouched.
    plans = [(name, module, _bind(name, module, fam, kind, profile, sp, mode, force, sp_modes.get(name)))
             for name, module, fam, kind in found]
    register_for_export()
    for name, module, binding in plans:
        _install(module, binding)
    _install_hooks(model, families, sp, gather_logits)

    rows = tuple(
        PatchedModule(name, type(module).__name__, binding.family,
                      {op: b.describe() for op, b in binding.ops.items()}, binding.npu_patched,
                      sp_modes.get(name, "ulysses") if sp is not None else "-")
        for name, module, binding in plans
    )
    if sp is not None:
        dp_rank, dp_size = sp.dp_rank, sp.dp_size
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        dp_rank, dp_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        dp_rank, dp_size = 0, 1
    return KernelizeReport(profile, sp_size, mode, rows, dp_rank, dp_size)


def unkernelize(model: torch.nn.Module) -> int:
    """Restore transformers' forwards and remove hooks and markers; returns how many modules were restored."""
    restored = 0
    for module in model.modules():
        if hasattr(module, _BINDING):
            module.__dict__.pop("forward", None)  # the instance attribute (if another kernelize left it): the
            # class forward shows through again
            delattr(module, _BINDING)
            if hasattr(module, NPU_MARKER):
                delattr(module, NPU_MARKER)
            restored += 1
        _remove_hooks(module)
    return restored


def _check_force(force) -> dict:
    if force is None:
        return {}
    if not isinstance(force, dict):
        raise TypeError(f"force: expected a dict {{op: implementation name}}, got {type(force).__name__}")
    for op, name in force.items():
        if op not in OPS:
            raise ValueError(f"force: unknown op {op!r}; expected one of {', '.join(OPS)}")
        check_impl_name(op, name, arg="force")
    return dict(force)


def _remove_hooks(module) -> None:
    for handle in getattr(module, _HOOK, ()):
        handle.remove()
    for attr in (_HOOK, SP_GROUP):
        if hasattr(module, attr):
            delattr(module, attr)


class TextModelPreHook:
    """A text model's forward pre-hook: first, no layer kernelize bound in it lost its instance forward, and
    huggingface's kernelize replaced nothing on it since — else a ``RuntimeError`` naming the layer before anything
    runs (that kernelize, called after ours, replaces the forward or removes it: the layer would run another forward,
    under sequence parallelism on this rank's tokens only; a forward the user wrapped is theirs and passes; not
    checked while tracing, where dynamo traces whatever forward the layer has); then ``then``, the packed-batch or
    the SP pre-hook. A module-level class: kernelized models deep-copy and pickle."""

    def __init__(self, layers: dict, then):
        self.layers = layers  # name in the model -> kernelized layer
        self.then = then

    def __call__(self, module, args, kwargs):
        if not torch.compiler.is_compiling():
            self.check_layers()
        return self.then(module, args, kwargs)

    def check_layers(self) -> None:
        for name, layer in self.layers.items():
            removed = "forward" not in layer.__dict__
            changed = (["its forward was removed: its class's would run"] if removed else []) + \
                compat.hub_replacements(layer)
            if changed:
                what = "; ".join(changed)
                raise RuntimeError(
                    f"model: {name} ({type(layer).__name__}) changed after sp_kernels.kernelize ({what}): it would "
                    "not run the kernels the report lists. Call sp_kernels.unkernelize(model) before another "
                    "kernelize, or leave this layer out of huggingface's kernel mapping")


def _install_hooks(model, families, sp, gather_logits: bool) -> None:
    """Text models: the check that the bound layers still run our forwards, then packed-batch detection, or under
    SP the batch split. Causal-LM modules under SP: the sharded head and loss. Idempotent: a new kernelize replaces
    the hooks of the last."""
    names = {m: name for name, m in model.named_modules()}
    for module in model.modules():
        _remove_hooks(module)
        handles = ()
        if any(isinstance(module, fam.text_model) for fam in families):
            layers = {names[m]: m for m in module.modules() if hasattr(m, _BINDING)}
            then = PackedBatchHook() if sp is None else sp_hooks.SPPreHook(sp)
            handles = (module.register_forward_pre_hook(TextModelPreHook(layers, then), with_kwargs=True),)
            if sp is not None:
                handles += (module.register_forward_hook(sp_hooks.SPRepadHook(sp), with_kwargs=True),)
        elif sp is not None and any(isinstance(module, fam.heads) for fam in families):
            handles = (module.register_forward_pre_hook(sp_hooks.SPLossPreHook(sp), with_kwargs=True),
                       module.register_forward_hook(sp_hooks.SPLossHook(sp, gather_logits), with_kwargs=True))
        if handles:
            setattr(module, _HOOK, handles)
            if sp is not None:
                setattr(module, SP_GROUP, sp)


def _install(module, binding: ModuleBinding) -> None:
    setattr(module, _BINDING, binding)
    # a partial, not a bound method: it deep-copies onto the copy and pickles (torch.save of the whole model)
    module.forward = functools.partial(FORWARDS[binding.kind], module)
    if binding.npu_patched:
        setattr(module, NPU_MARKER, True)
    elif hasattr(module, NPU_MARKER):
        delattr(module, NPU_MARKER)


def _bind(name, module, fam, kind, profile, sp, mode, force, sp_mode=None) -> ModuleBinding:
    dtype = next(module.parameters()).dtype
    grad = mode == "train"
    sp_size = 1 if sp is None else sp.size
    if kind == "attention" and getattr(module, "attention_dropout", 0.0) and grad:
        raise ValueError(f"model: attention_dropout={module.attention_dropout} is not supported by fusion_attention")
    contexts = _layer_contexts(module, kind, sp_size, sp_mode)
    kept = _kept_delta_rule(name, module) if kind == "gated_deltanet" and sp is not None else None
    if kept is not None:
        if force.get("chunk_gated_delta_rule", kept) != kept:
            raise ValueError(f"force: {name} is marked {NPU_MARKER}: its chunk_gated_delta_rule stays {kept!r}")
        force = {**force, "chunk_gated_delta_rule": kept}
    ops = {op: OpBinding.create(op, LayerContext(op, profile, dtype, shapes, options, sp_size, grad), force.get(op))
           for op, (shapes, options) in contexts.items()}
    npu = profile.type == "npu" and any(
        impl.device_types == ("npu",) for b in ops.values() for impl in b.implementations
    )
    if kind == "gated_deltanet":
        shard = None if sp is None else GDNContext(sp) if sp_mode == "context" else GDNShard.of(module, sp)
        return ModuleBinding(kind, fam.family.name, profile, ops, npu, project=fam.family.project, shard=shard)
    masked = functools.partial(_masked_attention, fam.modeling.eager_attention_forward)
    return ModuleBinding(kind, fam.family.name, profile, ops, npu, masked_attention=masked, shard=sp)


def _layer_contexts(module, kind, sp_size, sp_mode=None) -> dict:
    """``{op: (shapes, options)}`` of one layer (heads local to a rank; all of them under context parallelism)."""
    if kind == "gated_deltanet":
        return _contexts.gated_deltanet(
            num_k_heads=module.num_k_heads, num_v_heads=module.num_v_heads, head_k_dim=module.head_k_dim,
            head_v_dim=module.head_v_dim, conv_kernel=module.conv_kernel_size, activation=module.activation,
            sp_size=sp_size, sp_mode=sp_mode or "ulysses")
    cfg = module.config
    rope = getattr(cfg, "rope_parameters", None) or {}
    factor = rope.get("partial_rotary_factor", getattr(cfg, "partial_rotary_factor", 1.0))
    return _contexts.attention(num_heads=cfg.num_attention_heads, num_kv_heads=cfg.num_key_value_heads,
                               head_dim=module.head_dim, rotary_dim=int(module.head_dim * factor), sp_size=sp_size)


def _kept_delta_rule(name, module) -> str | None:
    """The marker rule: under SP, a module marked ``_twinkle_npu_patched`` keeps the delta rule kernelize bound on
    it (its name), and runs by Ulysses (:func:`sp_kernels._contexts.gated_deltanet_sp`)."""
    if not getattr(module, NPU_MARKER, False):
        return None
    previous = getattr(module, _BINDING, None)
    if previous is None:
        raise ValueError(
            f"model: {name} is marked {NPU_MARKER} by another patcher; kernelize cannot keep a kernel it did not "
            "bind. Kernelize the model on the NPU first (sp_size=1), or remove the marker"
        )
    return previous.ops["chunk_gated_delta_rule"].dense.chosen.name


def _masked_attention(eager_attention_forward, attn_implementation: str):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ALL_ATTENTION_FUNCTIONS.get_interface(attn_implementation, eager_attention_forward)


__all__ = ["KernelizeReport", "NPU_MARKER", "PatchedModule", "kernelize", "unkernelize"]
