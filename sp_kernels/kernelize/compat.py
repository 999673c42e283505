"""What differs between the transformers releases kernelize supports, and the guard against what it does not know.

transformers 5.24 renamed the cache keyword of the forwards kernelize owns: GatedDeltaNet's ``cache_params`` and
the attention and text models' ``past_key_values`` became ``cache`` (the old names are deprecated until 5.40). The
owned forwards take ``cache`` and the older names.

:func:`check_forward` runs at kernelize time on every transformers forward kernelize replaces (and, under sequence
parallelism, on the text model whose arguments the pre-hook rewrites): a parameter that our forward does not
handle is an error naming the class, the parameter and the transformers version — never dropped into ``**kwargs``.

:func:`check_hub_kernels` refuses a layer that huggingface ``kernels``' ``kernelize`` already gave a kernel our forward
would not call (the layer's own forward, or a function of ``use_kernelized_func`` such as the conv or the delta rule):
replacing that forward would drop the kernel without a word. Submodules our forwards call as modules (the gated
norm, q/k norms, projections) keep whatever forward they have.
"""
from __future__ import annotations

import inspect
from typing import Callable, Iterable

#: older names of the ``cache`` keyword (transformers < 5.24)
CACHE_ALIASES = ("cache_params", "past_key_values")
_CACHE_NAMES = ("cache", *CACHE_ALIASES)


def _canonical(name: str) -> str:
    return "cache" if name in CACHE_ALIASES else name


def the_cache(cache=None, **older):
    """The one cache a forward was given, whichever keyword carried it (``cache`` or an older name)."""
    for value in older.values():  # a few attribute reads: this runs in every decoded token's forwards
        if value is not None and cache is not None and value is not cache:
            given = [name for name, v in (("cache", cache), *older.items()) if v is not None]
            raise ValueError(f"cache: given twice, as {' and '.join(given)}")
        cache = value if value is not None else cache
    return cache


def cache_of(call: dict):
    """The cache in a call's arguments by name (``cache``, ``past_key_values`` or ``cache_params``)."""
    return the_cache(**{name: call.get(name) for name in _CACHE_NAMES})


def _named(sig: inspect.Signature) -> list[inspect.Parameter]:
    return [p for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def check_forward(cls: type, ours: Callable | Iterable[str], what: str = "sp-kernels' forward") -> None:
    """Refuse a transformers ``cls.forward`` with a parameter ``ours`` does not handle.

    ``ours`` is the replacement forward (its parameters, in order: transformers' positional parameters must be
    its positional parameters, up to the cache renaming) or, for a hook, the names it reads.
    """
    import transformers

    theirs = _named(inspect.signature(cls.forward))  # follows functools.wraps (deprecate_kwarg and friends)
    if callable(ours):
        mine = _named(inspect.signature(ours))
        handled = {_canonical(p.name) for p in mine}
        positional = [_canonical(p.name) for p in mine if p.kind is p.POSITIONAL_OR_KEYWORD]
    else:
        handled, positional = {_canonical(n) for n in ours}, None
    where = f"{cls.__module__}.{cls.__qualname__}.forward (transformers {transformers.__version__})"
    for p in theirs:
        if _canonical(p.name) not in handled:
            raise RuntimeError(
                f"model: {where} has a parameter {p.name!r} that {what} does not handle; kernelize refuses "
                "rather than drop it. Use a transformers version this sp-kernels release supports (see the "
                "README), or upgrade sp-kernels")
    if positional is not None:
        order = [_canonical(p.name) for p in theirs if p.kind is p.POSITIONAL_OR_KEYWORD]
        if positional[: len(order)] != order:
            raise RuntimeError(f"model: {where} takes its positional parameters in the order {order}, "
                               f"{what} in the order {positional}; kernelize refuses rather than mix them up")


#: where huggingface ``kernels``' kernelize records the repository of a forward it replaced (module or function)
HUB_KERNEL_REPO = "_kernel_repo"


def hub_replacements(module) -> list[str]:
    """What huggingface ``kernels``' kernelize replaced on ``module``: its forward, the functions attached to it with
    ``use_kernelized_func``; each as ``"<what> by <kernel repository>"``."""
    replaced = []
    if HUB_KERNEL_REPO in module.__dict__:
        replaced.append(f"its forward ({type(module).__name__}) by {module.__dict__[HUB_KERNEL_REPO]}")
    for fn_name, fn in module.__dict__.get("_kernel_funcs", {}).items():
        if HUB_KERNEL_REPO in fn.__dict__:
            replaced.append(f"{fn_name} by {fn.__dict__[HUB_KERNEL_REPO]}")
    return replaced


def check_hub_kernels(name: str, module) -> None:
    """Refuse ``module`` (at ``name`` in the model) if huggingface ``kernels``' kernelize replaced its forward or
    one of the functions attached to it with ``use_kernelized_func``."""
    replaced = hub_replacements(module)
    if replaced:
        raise ValueError(
            f"model: {name} was kernelized by huggingface's `kernels` ({'; '.join(replaced)}). sp_kernels.kernelize "
            f"replaces the forward of {type(module).__name__} with its own and would drop that kernel: leave this "
            "layer out of huggingface's kernel mapping, or use one of the two kernelize calls for it")


def count_decoded_token(cache, layer_idx: int) -> None:
    """A one-token decode updates the layer's conv state in place, outside ``update_conv_state``: count the token as
    transformers' own decode does (from 5.25 a linear-attention layer keeps the length ``get_seq_length`` reads;
    before, the length came from the attention layers and there is nothing to count)."""
    increase_count = getattr(cache, "increase_count", None)
    if increase_count is not None:
        increase_count(layer_idx, 0)


def attention_weights_requested() -> bool:
    """Whether the running forward records attention weights (``output_attentions=True``): transformers' output
    recorder (``capture_outputs``) keeps the outputs it collects in a context variable that also reads under
    torch.compile."""
    from transformers.utils.output_capturing import _active_collector

    collected = _active_collector.get()
    return collected is not None and "attentions" in collected


def fixed_length(cache, layer_idx: int) -> bool:
    """A cache layer of fixed length (static, sliding window) hands attention slots that hold no key yet: only the
    mask transformers built for it says which (dynamic layers: ``get_max_length() == -1``)."""
    return cache.layers[layer_idx].get_max_length() != -1


def recurrent_states_to_keep(cache, layer_idx: int) -> int:
    """How many of a forward's last per-token recurrent states the cache records (assisted decoding from
    transformers 5.25: ``crop`` rolls the state back to one of them); 0 when it records none."""
    to_keep = getattr(cache, "get_recurrent_states_to_keep", None)
    return 0 if to_keep is None else to_keep(layer_idx)
