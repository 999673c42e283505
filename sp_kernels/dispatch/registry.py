"""The registry: implementations declare what they need, :func:`select` picks the best that fits.

>>> from sp_kernels.dispatch import implementations
>>> print(implementations())          # a mapping you can print: op -> {name: Implementation}
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from sp_kernels.dispatch.context import Context
from sp_kernels.dispatch.packages import probe_package
from sp_kernels.dispatch import ub
from sp_kernels.dispatch.ub import check_launches

#: The ops this package dispatches.
OPS = ("chunk_gated_delta_rule", "causal_conv1d", "apply_rotary_pos_emb", "fusion_attention")
#: The device types of an implementation in plain torch.
ANY_DEVICE = ("cpu", "cuda", "npu")
#: ``SP_KERNELS_FORCE="causal_conv1d=torch,chunk_gated_delta_rule=reference"`` forces implementations per op.
FORCE_ENV = "SP_KERNELS_FORCE"

SupportsFn = Callable[[Context], "tuple[bool, str]"]


@dataclass(frozen=True)
class Residuals:
    """An implementation split at the tensors its backward needs, for torch.compile (``sp_kernels/_library.py``).

    ``forward(*args)`` returns ``(outputs, saved)`` without recording autograd: the outputs as the implementation
    returns them, and ``saved`` a list of tensors it computed (not its inputs). It runs on fake tensors too, so its
    shapes follow the arguments' shapes. ``backward(saved, grads, needs, *args)`` returns the gradient of each
    tensor argument (in order; ``None`` where ``needs`` is False) from the outputs' ``grads`` (``None`` where
    absent): the implementation's own backward, no recomputation. Ordinary batches only (no ``cu_seqlens``), and
    where ``applies(*args)`` (shapes and device, read while tracing) says so when given.
    """

    forward: Callable
    backward: Callable
    applies: Callable | None = None


@dataclass(frozen=True)
class Implementation:
    """One implementation of one op.

    ``fn`` takes the op's validated arguments (see each op's ``api.py``). ``device_types`` are torch device types
    it runs on; ``packages`` are modules imported lazily the first time it is considered; ``supports`` inspects a
    :class:`Context` and returns ``(ok, reason)``. Among the candidates that fit, the op's order of preference
    (:func:`prefer`) decides; ``priority`` (default 0) outranks it, for an implementation registered from outside
    the package (a test's stand-in, an experiment) that must win.
    ``launches`` (Triton implementations) lists the kernel launches (:class:`sp_kernels.dispatch.ub.Launch`: tile
    configuration and grid) it would make for a context; on an NPU each must fit the Unified Buffer and the grid
    cap, or the implementation is rejected with the numbers. ``selectable=False`` keeps an implementation out of
    automatic selection (it must be forced), as for the slow float64 references. ``residuals`` splits it at its
    saved tensors for torch.compile (:class:`Residuals`). ``decode_step`` (``chunk_gated_delta_rule``) is its
    one-token step without autograd that updates a state in place, for a layer's cached decoding:
    ``decode_step(qk [B, 2, H, K], v [B, H, G, V], decay, beta [B, H, G, 1], scale, state, l2norm, dtype)`` ->
    ``(o [B, H, G, V], state)`` (``decay = e^g``; ``state [B, HV, K, V]`` in ``dtype`` is updated and returned).
    """

    op: str
    name: str
    fn: Callable = field(repr=False)
    device_types: tuple[str, ...]
    priority: int = 0
    packages: tuple[str, ...] = ()
    supports: SupportsFn | None = field(default=None, repr=False)
    launches: Callable[[Context], tuple] | None = field(default=None, repr=False)
    selectable: bool = True
    description: str = ""
    residuals: Residuals | None = field(default=None, repr=False)
    decode_step: Callable | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"op: unknown op {self.op!r}; expected one of {OPS}")
        if isinstance(self.device_types, str):
            raise TypeError("device_types: expected a tuple of device types, got a str")

    def __reduce__(self):
        """Copies and pickles of anything holding an implementation (a kernelized model) refer to the registered
        one by ``(op, name)``: its functions are not copied, and need not be picklable."""
        return _registered_implementation, (self.op, self.name)

    def check(self, ctx: Context) -> tuple[bool, str]:
        """``(True, '')`` when this implementation can run ``ctx``, else ``(False, reason)``."""
        if ctx.device.type not in self.device_types:
            return False, f"runs on {'/'.join(self.device_types)}, not {ctx.device.type}"
        for module in self.packages:
            ok, why = probe_package(module)
            if not ok:
                return False, why
        if self.supports is not None:
            ok, reason = self.supports(ctx)
            if not ok:
                return False, reason or "unsupported (no reason given)"
        if self.launches is not None and ctx.device.type == "npu":
            return check_launches(self.launches(ctx), ctx.device, ctx.dtype)
        return True, ""


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select`: the chosen implementation and why each other one was not."""

    op: str
    context: Context
    chosen: Implementation
    rejected: tuple[tuple[str, str], ...]
    forced: bool = False

    def explain(self) -> str:
        if self.forced:
            how = "forced"
        elif self.chosen.priority:
            how = f"priority {self.chosen.priority}"
        else:
            how = "the first that fits of " + " > ".join(preference(self.op))
        lines = [f"{self.op}: {self.chosen.name} ({how})"]
        if self.chosen.description:
            lines.append(f"    runs: {self.chosen.description}")
        lines += [f"    rejected {name}: {reason}" for name, reason in self.rejected]
        return "\n".join(lines)


_REGISTRY: dict[str, dict[str, Implementation]] = {op: {} for op in OPS}
_PREFERENCE: dict[str, tuple[str, ...]] = {op: () for op in OPS}


def declare(op: str, *impls: Implementation, ub_models: Sequence[str] = (), counted_models: Sequence[str] = ()) -> None:
    """The one declaration of an op (in its folder's ``__init__``): its implementations in their order of preference,
    best first, registered; ``ub_models`` / ``counted_models`` the UB and counted models of the kernels they launch
    (:func:`sp_kernels.dispatch.ub.register`; a launch without one is an error on an NPU)."""
    _check_op(op)
    for impl in impls:
        if impl.op != op:
            raise ValueError(f"impls: {impl.name!r} is an implementation of {impl.op}, not of {op}")
    for impl in impls:
        register(impl)
    prefer(op, *(impl.name for impl in impls))
    ub.register(*ub_models)
    ub.register(*counted_models, counted=True)


def reference(op: str, fn: Callable, description: str) -> Implementation:
    """``op``'s float64-capable reference: any device, never selected unless forced."""
    return Implementation(op=op, name="reference", fn=fn, device_types=ANY_DEVICE, selectable=False,
                          description=description)


def prefer(op: str, *names: str) -> None:
    """``op``'s implementations in their order of preference, best first: registered names, each once."""
    _check_op(op)
    unknown = [n for n in names if n not in _REGISTRY[op]]
    if unknown:
        raise ValueError(f"names: {op} has no implementation {', '.join(map(repr, unknown))}; registered: "
                         f"{', '.join(sorted(_REGISTRY[op]))}")
    if len(set(names)) != len(names):
        raise ValueError(f"names: an implementation of {op} is named twice in {names}")
    _PREFERENCE[op] = tuple(names)


def preference(op: str) -> tuple[str, ...]:
    _check_op(op)
    return _PREFERENCE[op]


def _rank(impl: Implementation) -> tuple:
    order = _PREFERENCE[impl.op]
    return (-impl.priority, order.index(impl.name) if impl.name in order else len(order), impl.name)


def _registered_implementation(op: str, name: str) -> Implementation:
    if name not in _REGISTRY[op]:  # unpickling in a fresh process: sp_kernels registers its implementations
        import sp_kernels  # noqa: F401
    try:
        return _REGISTRY[op][name]
    except KeyError:
        raise ValueError(f"name: {op} has no registered implementation {name!r} (a copied or unpickled "
                         "kernelized model refers to implementations by name)") from None


def register(impl: Implementation, *, replace: bool = False) -> Implementation:
    """Add an implementation. Registering a taken name is an error unless ``replace=True``."""
    table = _REGISTRY[impl.op]
    if impl.name in table and not replace:
        raise ValueError(f"name: {impl.op} already has an implementation named {impl.name!r}")
    table[impl.name] = impl
    return impl


def unregister(op: str, name: str) -> Implementation:
    _check_op(op)
    try:
        return _REGISTRY[op].pop(name)
    except KeyError:
        raise ValueError(f"name: {op} has no implementation {name!r}") from None


@contextlib.contextmanager
def registered(*impls: Implementation) -> Iterator[tuple[Implementation, ...]]:
    """Register implementations for the duration of a ``with`` block (tests, experiments)."""
    previous = [(_REGISTRY[i.op].get(i.name)) for i in impls]
    for impl in impls:
        register(impl, replace=True)
    try:
        yield impls
    finally:
        for impl, prev in zip(impls, previous):
            if prev is None:
                _REGISTRY[impl.op].pop(impl.name, None)
            else:
                _REGISTRY[impl.op][impl.name] = prev


def implementations(op: str | None = None) -> dict:
    """``{op: {name: Implementation}}``, or ``{name: Implementation}`` for one op."""
    if op is not None:
        _check_op(op)
        return dict(_REGISTRY[op])
    return {o: dict(t) for o, t in _REGISTRY.items()}


def check_impl_name(op: str, name, arg: str = "impl") -> Implementation:
    """The implementation of ``op`` called ``name``; else a TypeError (not a str) or ValueError (unknown name)
    whose message starts with ``arg``, the argument the name came from (``impl``, ``force``, ...)."""
    _check_op(op)
    if not isinstance(name, str):
        raise TypeError(f"{arg}: expected an implementation name (str), got {type(name).__name__}")
    table = _REGISTRY[op]
    if name not in table:
        raise ValueError(f"{arg}: {op} has no implementation {name!r}; known: {', '.join(sorted(table))}")
    return table[name]


def forced_from_env(environ=None) -> dict[str, str]:
    """Parse ``SP_KERNELS_FORCE`` ('op=name,op=name') into ``{op: name}``; bad entries are errors."""
    raw = (os.environ if environ is None else environ).get(FORCE_ENV, "").strip()
    forced: dict[str, str] = {}
    if not raw:
        return forced
    for item in raw.split(","):
        op, sep, name = (s.strip() for s in item.partition("="))
        if not sep or not op or not name:
            raise ValueError(f"{FORCE_ENV}: expected 'op=implementation' items separated by commas, got {item!r}")
        _check_op(op, what=FORCE_ENV)
        forced[op] = name
    return forced


def select(op: str, ctx: Context, force: str | None = None, arg: str = "impl") -> Selection:
    """Choose the implementation of ``op`` for ``ctx``.

    ``force`` (else the op's entry in ``SP_KERNELS_FORCE``) names an implementation that must be used; it is an
    error if that name is unknown or if the implementation cannot run ``ctx``, with the reason. ``arg`` is the
    argument ``force`` came from, named in those errors (``impl`` of the ops, ``force`` of kernelize).
    """
    _check_op(op)
    if ctx.op != op:
        raise ValueError(f"ctx: context is for {ctx.op!r}, not {op!r}")
    table = _REGISTRY[op]
    if force is None:
        force, arg = forced_from_env().get(op), FORCE_ENV
    if force is not None:
        impl = check_impl_name(op, force, arg)
        ok, reason = impl.check(ctx)
        if not ok:
            raise ValueError(f"{arg}: {op} implementation {force!r} was forced but cannot run here: {reason}")
        others = tuple((name, "not forced") for name in sorted(table) if name != force)
        return Selection(op, ctx, impl, others, forced=True)

    rejected: list[tuple[str, str]] = []
    fits: list[Implementation] = []
    for impl in sorted(table.values(), key=_rank):
        if not impl.selectable:
            rejected.append((impl.name, "reference implementation: used only when forced"))
            continue
        ok, reason = impl.check(ctx)
        (fits.append(impl) if ok else rejected.append((impl.name, reason)))
    if not fits:
        detail = "; ".join(f"{n}: {r}" for n, r in rejected) or "nothing registered"
        raise RuntimeError(f"no implementation of {op} can run {ctx.describe()} ({detail})")
    chosen, *lower = fits
    rejected += [(i.name, f"fits, but {chosen.name} comes first") for i in lower]
    return Selection(op, ctx, chosen, tuple(rejected))


def _check_op(op: str, what: str = "op") -> None:
    if op not in _REGISTRY:
        raise ValueError(f"{what}: unknown op {op!r}; expected one of {', '.join(OPS)}")
