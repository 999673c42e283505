"""``explain``: which implementation each op gets for a device and a model shape, and why the others did not."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sp_kernels.dispatch import Selection, implementations, resolve_profile, select, ub
from sp_kernels import _checks, _contexts
from sp_kernels.kernelize import NPU_MARKER


@dataclass(frozen=True)
class ModelShape:
    """Defaults: a Qwen3.5-27B-like layer (GatedDeltaNet 16 key / 48 value heads of 128; attention 24 / 4 heads)."""

    batch: int = 1
    seq_len: int = 4096
    num_k_heads: int = 16
    num_v_heads: int = 48
    head_k_dim: int = 128
    head_v_dim: int = 128
    conv_kernel: int = 4
    num_heads: int = 24
    num_kv_heads: int = 4
    head_dim: int = 256
    rotary_dim: int = 64

    def __post_init__(self):
        for name in self.__dataclass_fields__:
            _checks.positive_int(name, getattr(self, name))


def explain(device="cpu", *, sp_size: int = 1, ub_kib: int | None = None, dtype: torch.dtype = torch.bfloat16, shape: ModelShape = ModelShape(),
            packed: bool = False, mode: str = "train", force: dict | None = None) -> list[Selection]:
    """One :class:`Selection` per op for ``shape`` on ``device`` (a real device or a simulated profile name)."""
    _checks.positive_int("sp_size", sp_size)
    profile = resolve_profile(device)
    if ub_kib is not None:
        _checks.positive_int("ub_kib", ub_kib)
        if profile.type != "npu":
            raise ValueError(f"ub_kib: only an NPU profile has a Unified Buffer, not {profile.spec}")
        profile = profile.replace(ub_bytes=ub_kib * 1024, name=f"{profile.name}[UB {ub_kib} KiB]")
    gdn_sp = _contexts.gated_deltanet_sp(shape.num_k_heads, shape.num_v_heads, sp_size,
                                         device_type=profile.type)[0] if sp_size > 1 else None
    contexts = {
        **_contexts.gated_deltanet(num_k_heads=shape.num_k_heads, num_v_heads=shape.num_v_heads,
                                   head_k_dim=shape.head_k_dim, head_v_dim=shape.head_v_dim,
                                   conv_kernel=shape.conv_kernel, activation="silu", sp_size=sp_size,
                                   B=shape.batch, T=shape.seq_len, sp_mode=gdn_sp),
        **_contexts.attention(num_heads=shape.num_heads, num_kv_heads=shape.num_kv_heads, head_dim=shape.head_dim,
                              rotary_dim=shape.rotary_dim, sp_size=sp_size, B=shape.batch, T=shape.seq_len),
    }
    force = force or {}
    return [
        select(op, _contexts.LayerContext(op, profile, dtype, shapes, options, sp_size, mode == "train")(packed, None),
               force=force.get(op))
        for op, (shapes, options) in contexts.items()
    ]


def _launch_lines(sel: Selection) -> list[str]:
    """On an NPU profile: the Unified Buffer estimate of every launch of each Triton implementation of the op —
    the chosen one, and the others (whatever rejected them), so the UB side of the decision is visible here."""
    ctx = sel.context
    if ctx.device.type != "npu" or not ctx.device.ub_bytes:
        return []
    lines = []
    for impl in sorted(implementations(sel.op).values(), key=lambda i: i is not sel.chosen):
        if impl.launches is None:
            continue
        tag = "chosen" if impl is sel.chosen else "rejected"
        for launch in impl.launches(ctx):
            if launch.kernel in ub.MODELS:
                est = ub.estimate(launch.kernel, arch=ctx.device, dtype=ctx.dtype, **launch.tile)
                lines.append(f"    UB {impl.name} ({tag}): {launch.describe()}: {est}")
    return lines


def _ub_overflows(sel: Selection) -> list[str]:
    """The implementations of the op one of whose launches overflows the Unified Buffer here (whatever else
    rejected them: on a simulated NPU a missing triton-ascend is named first)."""
    ctx = sel.context
    if ctx.device.type != "npu" or not ctx.device.ub_bytes:
        return []
    names = []
    for impl in implementations(sel.op).values():
        if impl.launches is not None and impl is not sel.chosen:
            ok, why = ub.check_launches(impl.launches(ctx), ctx.device, ctx.dtype)
            if not ok and why.endswith("(ub overflow)"):
                names.append(impl.name)
    return names


def _sp_rule(selections: list[Selection]) -> list[str]:
    ctx = selections[0].context
    if ctx.sp_size == 1:
        return []
    gdr = next(s for s in selections if s.op == "chunk_gated_delta_rule").chosen
    npu_kernel = ctx.device.type == "npu" and gdr.device_types == ("npu",)
    conv = next(s for s in selections if s.op == "causal_conv1d")
    overflows = _ub_overflows(conv)
    if overflows:
        said = all("(ub overflow)" in dict(conv.rejected).get(name, "") for name in overflows)
        verdict = (f"here {', '.join(overflows)} overflow(s) ({'reason' if said else 'UB lines'} above), "
                   f"so {conv.chosen.name} runs.")
    else:
        verdict = f"here none overflows; {conv.chosen.name} is chosen for the reasons above."
    gdn = next(s for s in selections if s.op == "chunk_gated_delta_rule").context
    mode = gdn.options["sp_mode"]
    n = 1 if mode == "context" else ctx.sp_size  # the heads the kernels see: all of them, or this rank's
    H, HV = gdn.shapes["H"] * n, gdn.shapes["HV"] * n
    _, why = _contexts.gated_deltanet_sp(H, HV, ctx.sp_size, device_type=ctx.device.type)
    divides = H % ctx.sp_size == 0 and HV % ctx.sp_size == 0
    if npu_kernel:
        marked = (f"  (here {gdr.name}, an NPU kernel; it has no context-parallel entry, so a marked module runs by "
                  + ("Ulysses)." if divides else "Ulysses, and kernelize refuses this sp_size: the heads do not divide)."))
    else:
        marked = f"  (here {gdr.name}: portable, so nothing is marked)."
    T = gdn.shapes["T"] * (ctx.sp_size if mode == "context" else 1)  # the global length
    sent = {m: _contexts.gated_deltanet_sp_bytes(
        mode=m, sp_size=ctx.sp_size, B=gdn.shapes["B"], T=T, num_k_heads=H, num_v_heads=HV,
        head_k_dim=gdn.shapes["K"], head_v_dim=gdn.shapes["V"], conv_kernel=conv.context.shapes["W"],
        itemsize=ctx.dtype.itemsize) / 2**20 for m in ("ulysses", "context")}
    bytes_line = (f"  bytes a rank sends per GatedDeltaNet layer, forward, at T={T}: Ulysses {sent['ulysses']:.1f} MB "
                  f"(grows with T), context parallelism {sent['context']:.1f} MB (fixed)"
                  + ("" if divides else " (Ulysses needs the heads to divide)") + ".")
    return [
        f"sequence parallel (sp_size={ctx.sp_size}): attention by Ulysses (local heads, the global length); "
        f"GatedDeltaNet by {'context parallelism' if mode == 'context' else 'Ulysses'}: {why}.",
        bytes_line,
        f"  marker rule: a GatedDeltaNet module marked {NPU_MARKER} keeps the chunk_gated_delta_rule bound at",
        f"  kernelize time{marked[1:]}",
        "  causal_conv1d: a Triton conv whose launches overflow the Unified Buffer at these shapes is rejected and",
        f"  the torch conv1d runs instead; {verdict}",
        "",
    ]


def render(selections: list[Selection]) -> str:
    ctx = selections[0].context
    lines = [f"device: {ctx.device.describe()}", f"sp_size: {ctx.sp_size}  dtype: {str(ctx.dtype)[6:]}"
             f"  packed: {ctx.packed}  grad: {ctx.requires_grad}", ""]
    for sel in selections:
        lines.append(f"[{sel.op}] {sel.context.describe()}")
        lines.append(sel.explain())
        lines += _launch_lines(sel)
        lines.append("")
    lines += _sp_rule(selections)
    return "\n".join(lines).rstrip()
