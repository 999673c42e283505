"""Public ``causal_conv1d``: validation, then the implementation the registry chooses."""
from __future__ import annotations

import torch

from sp_kernels import _checks, _library
from sp_kernels._contexts import choose, requires_grad

OP = "causal_conv1d"

#: Accepted ``activation`` values and what they mean ('swish' is another name for SiLU).
ACTIVATIONS = {None: None, "silu": "silu", "swish": "silu"}


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
    *,
    impl: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Depthwise causal 1-D convolution over the time axis (the short conv of Gated DeltaNet layers).

    With ``ctx`` the ``W - 1`` inputs preceding the sequence (``initial_state``, zeros if ``None``) followed by
    the sequence itself, i.e. ``ctx[:, s] = x[s - (W - 1)]``::

        y[t, d] = act(bias[d] + sum_{w < W} weight[d, w] * x[t - (W - 1) + w, d])

    Args:
        x: ``[B, T, D]``.
        weight: ``[D, W]`` (a ``nn.Conv1d(D, D, W, groups=D)`` weight ``[D, 1, W]`` squeezed), same dtype as ``x``.
        bias: ``[D]`` or ``None``, same dtype as ``x``.
        activation: ``None``, ``'silu'`` or ``'swish'`` (the same as ``'silu'``).
        initial_state: ``[N, D, W - 1]`` in ``x``'s dtype, ``N = B`` or the number of packed sequences: the
            ``W - 1`` inputs that precede each sequence, oldest first.
        output_final_state: also return the state after each sequence.
        cu_seqlens: packed sequences ``[0, t1, t1+t2, ..., T]`` (int, 1-D) with ``B == 1``; each sequence starts
            from its own ``initial_state`` row and never sees another sequence's tokens.
        impl: force an implementation by name (see ``python -m sp_kernels explain``).

    Returns:
        ``y`` ``[B, T, D]`` in ``x``'s dtype, and the final state ``[N, D, W - 1]`` (the last ``W - 1`` inputs of
        each sequence, oldest first, taken partly from ``initial_state`` when the sequence is shorter than
        ``W - 1``) in ``x``'s dtype, or ``None`` unless ``output_final_state``.

    State conventions of other libraries:
        * flash-linear-attention keeps ``[N, D, W]`` conv states (the last ``W`` inputs); ours is
          ``fla_state[..., 1:]`` (its oldest column is never used by the next step). Back:
          ``torch.nn.functional.pad(state, (1, 0))``.
        * transformers' linear-attention cache (``cache_params.get_conv_state(layer)``, used by
          ``causal_conv1d_update``) is ``[B, D, W]`` too: ours is ``conv_state[..., 1:]``; to write ours back,
          ``conv_state.copy_(torch.nn.functional.pad(state, (1, 0)))``.
    """
    _checks.tensor("x", x, 3)
    _checks.tensor("weight", weight, 2)
    B, T, D = x.shape
    W = weight.shape[1]
    _checks.shape("weight", weight, (D, None), "[D, W] with x's D")
    if W < 1:
        raise ValueError(f"weight: expected a kernel width W >= 1, got shape {list(weight.shape)}")
    _checks.same_device_dtype("weight", weight, "x", x)
    if bias is not None:
        _checks.tensor("bias", bias, 1)
        _checks.shape("bias", bias, (D,), "[D] with x's D")
        _checks.same_device_dtype("bias", bias, "x", x)
    if not (activation is None or isinstance(activation, str)) or activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected None, 'silu' or 'swish', got {activation!r}")
    activation = ACTIVATIONS[activation]
    output_final_state = _checks.flag("output_final_state", output_final_state)
    cu_seqlens = _checks.cu_seqlens(cu_seqlens, batch=B, total=T, device=x.device)
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    if initial_state is not None:
        _checks.tensor("initial_state", initial_state, 3)
        _checks.shape("initial_state", initial_state, (N, D, W - 1), "[N, D, W-1] (N sequences)")
        _checks.same_device_dtype("initial_state", initial_state, "x", x)

    name = choose(OP, x, {"B": B, "T": T, "D": D, "W": W}, packed=cu_seqlens is not None,
                  grad=requires_grad(x, weight, bias, initial_state), options={"activation": activation}, impl=impl)
    return LIBRARY_OP(name, x, weight, bias=bias, activation=activation, initial_state=initial_state,
                      output_final_state=output_final_state, cu_seqlens=cu_seqlens)


def _fake(x, weight, bias, activation, initial_state, output_final_state, cu_seqlens, impl):
    B, T, D = x.shape
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    return x.new_empty(x.shape), x.new_empty((N, D, weight.shape[1] - 1) if output_final_state else (0,))


LIBRARY_OP = _library.define(
    OP, "Tensor x, Tensor weight, Tensor? bias, str? activation, Tensor? initial_state, bool output_final_state, "
    "Tensor? cu_seqlens", outputs=2, fake=_fake, optional_outputs=(1,))
