"""The four ops as torch.library custom ops (``torch.ops.sp_kernels.<op>``): one opaque node per call in a graph.

Each op is defined once by a :class:`LibraryOp`: its schema (the implementations' own signature, plus ``impl``:
the name of the implementation the node runs), its fake (output shapes from input shapes, for tracing) and its
implementations' call. ``torch.library`` gets, per op:

- ``sp_kernels::<op>`` — runs the named registered implementation (any device);
- ``sp_kernels::<op>_backward`` — its backward: the forward recomputed under autograd, then ``autograd.grad``
  (every implementation has a backward of its own; the recomputation lets one opaque node serve them all);
- ``register_fake`` for both and ``register_autograd`` tying them together; ``torch.library.opcheck`` checks it;
- for an implementation split at its saved tensors (``Implementation.residuals``), on an ordinary batch:
  ``sp_kernels::<op>_saving``, whose forward also returns the tensors the implementation's backward needs (its
  residuals; the fake runs the split forward on fake tensors for their shapes), and
  ``sp_kernels::<op>_saving_backward``, the implementation's own backward on them: no recomputation.

Eager calls do not go through the custom op: they call the implementation directly, with its own (hand-written)
backward and no recomputation. Under ``torch.compile`` (``torch.compiler.is_compiling()``) calls go through the
custom op. The implementation is chosen in Python before the node is made — by the registry, cached per context —
so the graph holds one node per op call whatever implementation runs, with its name in the node.
"""
from __future__ import annotations

import re
from collections import Counter
from types import SimpleNamespace
from typing import Callable

import torch

from sp_kernels.dispatch import check_impl_name

NAMESPACE = "sp_kernels"
_EMPTY = (0,)  # an optional output that is absent: a tensor of shape [0] (custom ops return tensors)


class LibraryOp:
    """One op: ``schema`` lists the arguments as the implementations take them (``impl`` is added); ``outputs``
    how many tensors it returns; ``optional_outputs`` which of them may be ``None``; ``fake(**args)`` the outputs'
    shapes and dtypes (empty tensors for absent optional outputs)."""

    def __init__(self, op: str, schema: str, outputs: int, fake: Callable, optional_outputs: tuple[int, ...] = ()):
        self.op = op
        self.outputs = outputs
        self.optional_outputs = optional_outputs
        self._fake = fake
        params = [p.strip() for p in schema.split(",")]
        self.names = [p.split()[-1] for p in params] + ["impl"]
        self.tensors = [i for i, p in enumerate(params) if re.match(r"Tensor\??\s", p)]
        returns = ", ".join(["Tensor"] * outputs)
        qualname = f"{NAMESPACE}::{op}"
        torch.library.define(qualname, f"({schema}, str impl) -> ({returns})")
        torch.library.define(f"{qualname}_backward", f"(Tensor?[] grads, bool[] needs, {schema}, str impl) -> Tensor[]")
        torch.library.register_kernel(qualname, None, self._kernel)
        torch.library.register_fake(qualname, self._fake_outputs)
        torch.library.register_kernel(f"{qualname}_backward", None, self._backward_kernel)
        torch.library.register_fake(f"{qualname}_backward", self._backward_fake)
        torch.library.register_autograd(qualname, self._backward, setup_context=self._setup_context)
        self.default = getattr(getattr(torch.ops, NAMESPACE), op).default
        self.backward_op = getattr(getattr(torch.ops, NAMESPACE), f"{op}_backward").default

        saving = f"{qualname}_saving"
        torch.library.define(saving, f"({schema}, str impl) -> ({returns}, Tensor[] residuals)")
        torch.library.define(f"{saving}_backward",
                             f"(Tensor?[] grads, Tensor[] residuals, bool[] needs, {schema}, str impl) -> Tensor[]")
        torch.library.register_kernel(saving, None, self._saving_kernel)
        torch.library.register_fake(saving, self._saving_fake)
        torch.library.register_kernel(f"{saving}_backward", None, self._saved_backward_kernel)
        torch.library.register_fake(f"{saving}_backward",
                                    lambda grads, residuals, needs, *values: self._backward_fake(grads, needs, *values))
        torch.library.register_autograd(saving, self._saved_backward, setup_context=self._saving_setup_context)
        self.saving = getattr(getattr(torch.ops, NAMESPACE), f"{op}_saving").default
        self.saved_backward = getattr(getattr(torch.ops, NAMESPACE), f"{op}_saving_backward").default

    # --- calling ---------------------------------------------------------------------------------------------------
    def __call__(self, impl: str, *args, **kwargs):
        """Run implementation ``impl`` on the implementations' arguments; outputs as the implementation gives them
        (``None`` for an absent optional output)."""
        if not torch.compiler.is_compiling():
            return check_impl_name(self.op, impl).fn(*args, **kwargs)
        values = self._bind(args, kwargs)
        if self.saves(impl, values):
            return self._unwrap(self.saving(*values, impl)[: self.outputs])
        out = self.default(*values, impl)
        return self._unwrap(out)

    def saves(self, impl: str, values) -> bool:
        """Whether a traced call runs ``<op>_saving``: the implementation is split at its saved tensors, the batch
        is ordinary (packed shapes follow the boundaries' values) and a gradient is wanted."""
        residuals = check_impl_name(self.op, impl).residuals
        if residuals is None or dict(zip(self.names, values)).get("cu_seqlens") is not None:
            return False
        if residuals.applies is not None and not residuals.applies(*values):
            return False
        return torch.is_grad_enabled() and any(values[i] is not None and values[i].requires_grad for i in self.tensors)

    def _bind(self, args, kwargs) -> list:
        names = self.names[:-1]
        values = list(args) + [None] * (len(names) - len(args))
        for name, value in kwargs.items():
            values[names.index(name)] = value
        return values

    def _unwrap(self, out):
        out = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        out = tuple(None if i in self.optional_outputs and o.shape == _EMPTY else o for i, o in enumerate(out))
        return out if self.outputs > 1 else out[0]

    # --- torch.library registrations -------------------------------------------------------------------------------
    def _run(self, values) -> tuple:
        *args, impl = values
        out = check_impl_name(self.op, impl).fn(*args)
        out = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        first = next(o for o in out if o is not None)
        return tuple(first.new_empty(_EMPTY) if o is None else o for o in out)

    def _kernel(self, *values):
        FORWARD_RUNS[self.op] += 1
        # contiguous, as the fake says; and a custom op's outputs must not alias its inputs (an implementation may
        # return an input unchanged)
        out = tuple(o.contiguous() for o in self._run(values))
        inputs = {t.data_ptr() for t in values if isinstance(t, torch.Tensor) and t.numel()}
        out = tuple(o.clone() if o.numel() and o.data_ptr() in inputs else o for o in out)
        return out if self.outputs > 1 else out[0]

    def _fake_outputs(self, *values):
        out = self._fake(**dict(zip(self.names, values)))
        return tuple(out) if self.outputs > 1 else out

    def _setup_context(self, ctx, inputs, output):
        ctx.save_for_backward(*(inputs[i] for i in self.tensors))
        ctx.values = [None if i in self.tensors else v for i, v in enumerate(inputs)]

    def _backward(self, ctx, *grads):
        values = list(ctx.values)
        for i, t in zip(self.tensors, ctx.saved_tensors):
            values[i] = t
        needs = [bool(ctx.needs_input_grad[i]) for i in self.tensors]
        result = [None] * len(values)
        if any(needs):
            got = self.backward_op(list(grads), needs, *values)
            for j, (i, need) in enumerate(zip(self.tensors, needs)):
                result[i] = got[j] if need else None
        return tuple(result)

    def _backward_kernel(self, grads, needs, *values):
        values = list(values)
        leaves = {}
        for i, need in zip(self.tensors, needs):
            if need:
                values[i] = leaves[i] = values[i].detach().requires_grad_()
        FORWARD_RUNS[self.op] += 1  # recomputed
        with torch.enable_grad():
            out = self._run(values)
        pairs = [(o, g) for o, g in zip(out, grads) if g is not None and o.requires_grad]
        got = iter(torch.autograd.grad([o for o, _ in pairs], list(leaves.values()), [g for _, g in pairs],
                                       allow_unused=True)) if pairs and leaves else iter(())
        first = next(v for v in values if isinstance(v, torch.Tensor))
        result = []
        for i, need in zip(self.tensors, needs):
            if need:
                g = next(got, None)
                result.append(values[i].new_zeros(values[i].shape) if g is None else g.contiguous())
            else:
                result.append(first.new_empty(_EMPTY))
        return result

    def _backward_fake(self, grads, needs, *values):
        first = next(v for v in values if isinstance(v, torch.Tensor))
        return [values[i].new_empty(values[i].shape) if need else first.new_empty(_EMPTY)  # contiguous, as the kernel
                for i, need in zip(self.tensors, needs)]

    # --- <op>_saving: the residuals out of the forward, the implementation's backward on them ---------------------
    def _split_forward(self, values) -> tuple[tuple, list]:
        *args, impl = values
        out, saved = check_impl_name(self.op, impl).residuals.forward(*args)
        out = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        first = next(o for o in out if o is not None)
        return tuple(first.new_empty(_EMPTY) if o is None else o.contiguous() for o in out), list(saved)

    def _saving_kernel(self, *values):
        FORWARD_RUNS[self.op] += 1
        out, saved = self._split_forward(values)
        # a custom op's outputs are fresh tensors: none may alias an input or another output
        seen = {t.untyped_storage().data_ptr() for t in values if isinstance(t, torch.Tensor) and t.numel()}
        fresh = []
        for t in (*out, *saved):
            if t.numel() and t.untyped_storage().data_ptr() in seen:
                t = t.clone()
            if t.numel():
                seen.add(t.untyped_storage().data_ptr())
            fresh.append(t)
        return (*fresh[: len(out)], fresh[len(out):])

    def _saving_fake(self, *values):
        out, saved = self._split_forward(values)  # on fake tensors: shapes only
        return (*out, [t.new_empty_strided(t.size(), t.stride()) for t in saved])

    def _saving_setup_context(self, ctx, inputs, output):
        ctx.save_for_backward(*(inputs[i] for i in self.tensors), *output[-1])
        ctx.values = [None if i in self.tensors else v for i, v in enumerate(inputs)]

    def _saved_backward(self, ctx, *grads):
        saved = ctx.saved_tensors
        values = list(ctx.values)
        for i, t in zip(self.tensors, saved):
            values[i] = t
        needs = [bool(ctx.needs_input_grad[i]) for i in self.tensors]
        result = [None] * len(values)
        if any(needs):
            got = self.saved_backward(list(grads[: self.outputs]), list(saved[len(self.tensors):]), needs, *values)
            for j, (i, need) in enumerate(zip(self.tensors, needs)):
                result[i] = got[j] if need else None
        return tuple(result)

    def _saved_backward_kernel(self, grads, residuals, needs, *values):
        *args, impl = values
        grads = [None if g is None or (i in self.optional_outputs and g.shape == _EMPTY) else g
                 for i, g in enumerate(grads)]
        got = check_impl_name(self.op, impl).residuals.backward(residuals, grads, needs, *args)
        first = next(v for v in values if isinstance(v, torch.Tensor))
        return [values[i].new_zeros(values[i].shape) if need and g is None else g.contiguous() if need
                else first.new_empty(_EMPTY) for i, need, g in zip(self.tensors, needs, got)]


def function_backward(function: type[torch.autograd.Function], grads, saved, needs, **attributes):
    """``function.backward`` called outside autograd, on a context holding ``saved`` (as ``saved_tensors``),
    ``needs`` (as ``needs_input_grad``) and ``attributes``: an autograd Function's own backward, for a
    :class:`~sp_kernels.dispatch.Residuals` split."""
    ctx = SimpleNamespace(saved_tensors=tuple(saved), needs_input_grad=tuple(needs), **attributes)
    with torch.no_grad():
        return function.backward(ctx, *grads)


LIBRARY: dict[str, LibraryOp] = {}
#: how many times each op's forward ran inside compiled graphs (its node, or a backward recomputing it), for the
#: benchmarks: a step whose ops all keep their residuals runs each forward once
FORWARD_RUNS: Counter = Counter()


def define(op: str, schema: str, outputs: int, fake: Callable, optional_outputs: tuple[int, ...] = ()) -> LibraryOp:
    LIBRARY[op] = LibraryOp(op, schema, outputs, fake, optional_outputs)
    return LIBRARY[op]
