"""The chunked gated delta rule as one ``torch.autograd.Function`` with a hand-written backward.

Per chunk of ``C`` tokens, with ``gc = cumsum(g)``, ``Gam = exp(gc)``, ``D[i, j] = exp(gc_i - gc_j)`` for
``j <= i`` (0 above the diagonal), ``Ds`` its strictly lower part and ``S`` the entering state (row-vector
convention, ``S`` is ``[K, V]``)::

    A  = beta_i (k k^T) Ds                    Tm = (I + A)^-1 (explicit, see ``_unit_lower_inverse``)
    [u | w] = Tm [beta v | beta Gam k]        U  = u - w S
    o  = (Gam q) S + P U,   P = (q k^T) D     S' = Gam_C S + kd^T U,   kd = k exp(gc_C - gc)

The chunks are processed in blocks of a few chunks (``_block_chunks``), and only the state recurrence is
sequential. Forward, per block: the intra-chunk quantities by batched matmuls, the state scan over the block's
chunks (two matmuls per chunk: ``U``, then ``S'``), then the outputs batched. Backward, blocks in reverse: the
``(Gam q)^T dO`` and ``P^T dO`` terms batched, a reverse scan (two matmuls per chunk) for the gradients of the
states and of ``U``, then everything else by batched matmuls again (with ``dvb = Tm^T dU``: dL/dw = -dU S^T gives
-dL/d(beta Gam k) = dvb S^T, and -dL/dA = dvb U^T, so ``w`` and ``u`` need no gradient matmuls of their own;
``dO`` and ``dvb`` are stacked by rows so that their products with ``S^T`` and ``U^T`` are two matmuls, not four).
Saved for backward, per block (:class:`Block`): the chunked normalised inputs, ``q k^T`` and ``k k^T`` (per
query/key head), ``Tm``, ``U``, ``-w`` and the states.

The optional L2 normalisation of q and k and the ``scale`` of q are folded in (forward and backward), and so
is the ``[B, T, H, D]`` <-> chunk layout change, so autograd sees one node. Blocks keep temporaries small and
in cache; on CPU, fresh large allocations (page faults) cost as much as the arithmetic.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch._subclasses.fake_tensor import FakeTensor

CHUNK = 64
_BLOCK = 16  # diagonal block size of the explicit triangular inverse
_EPS = 1e-6  # l2norm: x / sqrt(sum(x^2) + eps), as fla and transformers
#: Decays below exp(-_CUTOFF) are exactly 0 in float32 (see :func:`_decay_exp`). exp(-30) = 9.4e-14 is six orders
#: below float32's resolution (1.2e-7), and products of two kept decays (>= exp(-60) = 8.7e-27) stay far above
#: float32's smallest normal number (1.2e-38).
_CUTOFF = 30.0


def _masks(C: int, like: torch.Tensor):
    """``(lower, strict)``: float ``[C, C]`` masks of the lower and strictly lower triangle in ``like``'s dtype and
    device (cached per size, dtype and device: rebuilding them with ``tril_`` on every call is measurable; not for
    fake tensors, which tracing makes and which do not mix with real ones)."""
    fake = isinstance(like, FakeTensor)
    key = (C, like.dtype, like.device)
    masks = None if fake else _MASKS.get(key)
    if masks is None:
        lower = like.new_ones(C, C).tril_()
        masks = (lower, lower.tril(-1))
        if not fake:
            _MASKS[key] = masks
    return masks


_MASKS: dict = {}


_TINY = math.exp(-_CUTOFF)


def _flush_(t: torch.Tensor) -> torch.Tensor:
    """Zero the float32 entries of ``t`` below ``exp(-_CUTOFF)`` in magnitude, in place: what the inverse's products
    then multiply stays normal (see :func:`_decay_exp`); float64 is left as it is."""
    if t.dtype == torch.float64:
        return t
    return t.mul_(t.abs() >= _TINY)


def _unit_lower_inverse(na: torch.Tensor) -> torch.Tensor:
    """``(I - na_s)^-1`` for ``na [..., C, C]`` (batched; CPU triangular solves are slow), ``na_s`` the strictly
    lower part of ``na`` (``-A``: callers pass ``A`` negated, and only its strictly lower part is read).

    Diagonal ``b x b`` blocks: ``(I - n)^-1 = (I + n)(I + n^2)(I + n^4)...`` (``n`` the strictly lower part of a
    diagonal block of ``na``, nilpotent); then block-row forward substitution ``X[i, :i] = X[i, i] (na[i, :i]
    X[:i, :i])``. In float32 the operands and every product are flushed (:func:`_flush_`): entries are products of
    decays along paths of tokens, and a long path of kept decays can still underflow into the subnormal range.
    """
    na = _flush_(na.clone()) if na.dtype != torch.float64 else na
    C = na.shape[-1]
    b = _BLOCK if C % _BLOCK == 0 else C
    nb = C // b
    blocks = na.unflatten(-1, (nb, b)).unflatten(-3, (nb, b))  # [..., nb, b, nb, b]
    n = blocks.diagonal(dim1=-4, dim2=-2).movedim(-1, -3) * _masks(b, na)[1]  # [..., nb, b, b]
    x = n + torch.eye(b, dtype=na.dtype, device=na.device)
    p, power = n, 2
    while power < b:
        p = _flush_(p @ p)
        x = _flush_(x + x @ p)  # x (I + n^power)
        power *= 2
    out = torch.zeros_like(na)
    out.unflatten(-1, (nb, b)).unflatten(-3, (nb, b)).diagonal(dim1=-4, dim2=-2).copy_(x.movedim(-3, -1))
    for i in range(1, nb):
        rows, left = slice(i * b, (i + 1) * b), slice(0, i * b)
        out[..., rows, left] = _flush_(x[..., i, :, :] @ _flush_(na[..., rows, left] @ out[..., left, left]))
    return out


def _decay_exp(x: torch.Tensor) -> torch.Tensor:
    """``exp(x)`` of log-space decays ``x <= 0``, in float32 exactly 0 where ``x < -_CUTOFF`` (a new tensor).

    Real gates decay fast (Qwen3.5's ``g`` reaches -10 per token), so within a chunk ``exp`` of cumulated decays
    lands in float32's subnormal range (below 1.2e-38, ``x < -87``), and every product with a subnormal operand or
    result takes a microcode assist on x86: the same step measured 3-5x slower with a real model's gates than with
    mild ones. Clamping first (no subnormal from the exp itself) and zeroing what was clamped keeps every later
    product normal or exactly 0. Float64 keeps every decay (its subnormals start at ``x < -708``)."""
    if x.dtype == torch.float64:
        return x.exp()
    return x.clamp_min(-_CUTOFF).exp_().mul_(x > -_CUTOFF)


def _decay(gc: torch.Tensor) -> torch.Tensor:
    """``D[..., i, j] = exp(gc_i - gc_j)`` for ``j <= i``, else 0 (and 0 below ``exp(-_CUTOFF)`` in float32).

    The upper triangle is zeroed before the exp (no overflow) and after it; a float mask is used because ``exp``
    of ``-inf`` and boolean ``masked_fill`` are several times slower on CPU.
    """
    lower = _masks(gc.shape[-1], gc)[0]
    return _decay_exp((gc[..., :, None] - gc[..., None, :]).mul_(lower)).mul_(lower)


def _chunk_view(x: torch.Tensor, G: int) -> torch.Tensor:
    """``x [B, nb * C, H * G, *D]`` viewed as ``[nb, B, H, G, C, *D]`` (chunk layout, B and H not merged)."""
    T, HG = x.shape[1:3]
    x = x.unflatten(2, (HG // G, G)).unflatten(1, (T // CHUNK, CHUNK))  # [B, nb, C, H, G, *D]
    return x.permute((1, 0, 3, 4, 2) + tuple(range(5, x.dim())))


def _to_chunks(x: torch.Tensor, heads: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, T, heads * G, *D]`` -> ``[nb, B * heads, G, C, *D]``: always a copy, into ``out`` if given."""
    view = _chunk_view(x, x.shape[2] // heads)
    if out is None:
        return view.clone(memory_format=torch.contiguous_format).flatten(1, 2)
    out.unflatten(1, view.shape[1:3]).copy_(view)
    return out


def _store_chunks(dst: torch.Tensor, x: torch.Tensor) -> None:
    """Write ``x [nb, B * H, G, C, *D]`` into ``dst [B, nb * C, H * G, *D]`` (the inverse of ``_to_chunks``)."""
    _chunk_view(dst, x.shape[2]).copy_(x.unflatten(1, (dst.shape[0], x.shape[1] // dst.shape[0])))


def _scaled_chunks(x: torch.Tensor, scale: float, l2norm: bool):
    """``x [B, T, H, K]`` -> ``(y, r)``: ``y = scale * x * r`` in chunk layout ``[nb, B * H, 1, C, K]`` (one pass
    over ``x`` besides the norm), ``r = (|x|^2 + eps)^-1/2`` ``[nb, B * H, 1, C, 1]`` with ``l2norm``, else None."""
    view = _chunk_view(x, 1)  # [nb, B, H, 1, C, K], strided
    y = x.new_empty(view.shape)
    if not l2norm:
        torch.mul(view, scale, out=y)
        return y.flatten(1, 2), None
    r = x.new_empty(view.shape[:-1] + (1,))
    torch.linalg.vector_norm(view, dim=-1, keepdim=True, out=r).square_().add_(_EPS).rsqrt_()
    torch.mul(view, r * scale if scale != 1.0 else r, out=y)
    return y.flatten(1, 2), r.flatten(1, 2)


class Chunks(NamedTuple):
    """One block's operands in chunk layout ``[nb, B * H, G, C, *]`` (q, k with ``G = 1``)."""

    q: torch.Tensor  #: normalised (with l2norm) and scaled ``[nb, BH, 1, C, K]``
    k: torch.Tensor  #: normalised (with l2norm) ``[nb, BH, 1, C, K]``
    v: torch.Tensor  #: ``[nb, BH, G, C, V]``
    gc: torch.Tensor  #: ``cumsum(g)`` within each chunk ``[nb, BH, G, C]``
    beta: torch.Tensor  #: ``[nb, BH, G, C]``
    rq: torch.Tensor | None  #: q's l2norm factors ``(|q|^2 + eps)^-1/2`` ``[nb, BH, 1, C, 1]``; None without l2norm
    rk: torch.Tensor | None  #: k's, the same


class Block(NamedTuple):
    """What the forward of one block of chunks saves for its backward: its :class:`Chunks` and these."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    gc: torch.Tensor
    beta: torch.Tensor
    rq: torch.Tensor | None
    rk: torch.Tensor | None
    qk: torch.Tensor  #: ``q k^T`` per key head ``[nb, BH, 1, C, C]``
    kk: torch.Tensor  #: ``k k^T`` per key head ``[nb, BH, 1, C, C]``
    tm: torch.Tensor  #: ``(I + A)^-1`` ``[nb, BH, G, C, C]``
    values: torch.Tensor  #: ``U = u - w S`` ``[nb, BH, G, C, V]``
    nw: torch.Tensor  #: ``-w`` ``[nb, BH, G, C, K]``
    h: torch.Tensor  #: the state entering each chunk and the one leaving the block ``[nb + 1, BH * G, K, V]``


def _saved_tensors(block: Block) -> list[torch.Tensor]:
    """A block's saved tensors in :class:`Block`'s order, without the l2norm factors when there are none."""
    return [x for x in block if x is not None]


def _saved_blocks(saved, l2norm: bool) -> list[Block]:
    """Each :class:`Block` in :func:`chunk_forward`'s ``saved`` (:func:`_saved_tensors` of each, concatenated)."""
    fields = Block._fields if l2norm else tuple(f for f in Block._fields if f not in ("rq", "rk"))
    n = len(fields)
    return [Block(**{"rq": None, "rk": None, **dict(zip(fields, saved[i : i + n]))}) for i in range(0, len(saved), n)]


def _prepare(inputs, tokens: slice, scale: float, l2norm: bool) -> Chunks:
    """One block's :class:`Chunks` from the raw ``(q, k, v, g, beta)`` (``tokens`` a slice of whole chunks)."""
    q, k, v, g, beta = (x[:, tokens] for x in inputs)
    (q, rq), (k, rk) = _scaled_chunks(q, scale, l2norm), _scaled_chunks(k, 1.0, l2norm)
    v, g, beta = (_to_chunks(x, inputs[0].shape[2]) for x in (v, g, beta))
    return Chunks(q=q, k=k, v=v, gc=g.cumsum_(-1), beta=beta, rq=rq, rk=rk)


def _wy(tm, v, k, beta, gam, u, nw) -> None:
    """``[u | -w] = Tm [beta v | -beta Gam k]`` into ``u``, ``nw`` (``w`` stored negated: ``U = u + (-w) S`` is
    then one multiply-add), as ``u = (Tm diag(beta)) v`` and ``-w = -(Tm diag(beta Gam)) k``: the diagonal scalings
    act on ``[C, C]`` matrices rather than on ``[C, K]``/``[C, V]`` ones, and since ``k`` is shared by the ``G``
    value heads of its key head, ``-w`` is one ``[G C, C] x [C, K]`` product per key head (the ``G`` matrices
    ``Tm diag(beta Gam)`` stacked by rows, as they lie in memory)."""
    tb = tm * beta[..., None, :]
    torch.matmul(tb, v, out=u)
    tb.mul_(gam.neg()[..., None, :])
    nb, BH, G, C = tb.shape[:4]
    torch.bmm(tb.view(nb * BH, G * C, C), k.view(nb * BH, C, k.shape[-1]), out=nw.view(nb * BH, G * C, -1))


def _flat(x: torch.Tensor) -> torch.Tensor:
    """``[NC, BH, G, R, S]`` -> ``[NC, BH * G, R, S]`` (a view): one chunk's batched-matmul operands."""
    return x.flatten(1, 2)


def _sum_groups(x: torch.Tensor) -> torch.Tensor:
    """Sum over the value-head group dim 2 (the G value heads share one query/key head)."""
    return x if x.shape[2] == 1 else x.sum(2, keepdim=True)


def _rowdot(a: torch.Tensor, b: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum(-1)``, the product written into the flat buffer ``scratch`` (no large temporary)."""
    shape = torch.broadcast_shapes(a.shape, b.shape)
    return torch.mul(a, b, out=scratch[: shape.numel()].view(shape)).sum(-1)


def _l2norm_backward(y, dy, r, scale: float, scratch: torch.Tensor, out: torch.Tensor) -> None:
    """Gradient through ``y = scale * x * r``, ``r = (|x|^2 + eps)^-1/2``: ``dx = r (s dy - y (y.dy) / s)``, written
    into ``out``, a ``_chunk_view`` (``dy`` is overwritten)."""
    if scale == 0:
        out.zero_()
        return
    coef = _rowdot(y, dy, scratch).div_(-scale)[..., None]
    split = out.shape[1:3]  # (B, H): out is a _chunk_view
    torch.mul(dy.mul_(scale).addcmul_(y, coef).unflatten(1, split), r.unflatten(1, split), out=out)


def _block_chunks(chunk_numel: int) -> int:
    """Chunks per block, from the elements of one chunk of ``v`` (``BH * G * C * V``): ~1 MiB per ``[block, BH, G,
    C, V]`` fp32 slice keeps temporaries and saved tensors small enough to be recycled by the allocator (large
    fresh buffers cost page faults) and warm in cache (on this CPU: the best of 2 to 32 chunks at H=8, K=V=128;
    2 to 16 are within the noise at H=4, G=2, T=4096)."""
    return max(1, (1 << 18) // chunk_numel)


def _forward_block(chunks: Chunks, h, *, qk, kk, values, nw, o):
    """Chunks ``[n0, n1)``: ``h`` the states ``[n1 - n0 + 1, BH * G, K, V]`` (``h[0]`` given, the rest written);
    ``qk, kk, values, nw`` (:class:`Block`) and the output ``o`` (chunk layout) are written (``values`` first holds
    ``u``, then ``U = u - w S``). Returns ``Tm``.

    Only the state recurrence is sequential (two matmuls per chunk); the outputs ``o = (Gam q) h + P U`` are
    batched over the block once its states are known."""
    q, k, v, gc, beta = chunks.q, chunks.k, chunks.v, chunks.gc, chunks.beta
    gam = _decay_exp(gc)
    kt = k.transpose(-1, -2)
    torch.matmul(q, kt, out=qk)
    torch.matmul(k, kt, out=kk)
    decay = _decay(gc)
    tm = _unit_lower_inverse(torch.mul(kk, decay).mul_(beta.neg()[..., :, None]))  # -A, read strictly lower
    _wy(tm, v, k, beta, gam, values, nw)
    kd3t = _flat(k * _decay_exp(gc[..., -1:] - gc)[..., None]).transpose(-1, -2)
    gam3 = gam[..., -1].flatten(1)[..., None, None]  # Gam_C
    hs = h.unbind(0)  # per-chunk views made once (indexing in the loop is a dispatch per operand)
    for i, (u, nw_, kdt, gc_) in enumerate(zip(*(x.unbind(0) for x in (_flat(values), _flat(nw), kd3t, gam3)))):
        u.baddbmm_(nw_, hs[i])  # h[n] enters chunk n: U[n] = u + (-w) h[n], h[n + 1] = Gam_C h[n] + kd^T U[n]
        torch.mul(hs[i], gc_, out=hs[i + 1]).baddbmm_(kdt, u)
    qg = q * gam[..., None]
    torch.bmm(qg.flatten(0, 2), h[:-1].flatten(0, 1), out=o.flatten(0, 2))
    o.flatten(0, 2).baddbmm_(decay.mul_(qk).flatten(0, 2), values.flatten(0, 2))  # + P values, P = (q k^T) D
    return tm


class _Decays(NamedTuple):
    """A block's decays, recomputed from ``gc`` in the backward."""

    gam: torch.Tensor  #: ``Gam = exp(gc)`` ``[nb, BH, G, C]``
    kdecay: torch.Tensor  #: ``Gam_C / Gam`` ``[nb, BH, G, C]``
    decay: torch.Tensor  #: ``D`` ``[nb, BH, G, C, C]``


def _reverse_scan(block: Block, decays: _Decays, *, p, do_grad, dh):
    """The gradients that flow through the state recurrence, in reverse: ``(dx, dvalues, dhs)`` with ``dx = [dO;
    dvb]`` ``[nb, BH, G, 2C, V]`` (``dO`` filled from ``do_grad``, ``dvb`` left for :func:`_through_states`),
    ``dvalues = dL/dU`` and ``dhs[n] = dL/dh[n]`` (``dhs[nb] = dh``, the gradient of the state leaving the block).

    The ``(Gam q)^T dO`` and ``P^T dO`` terms are batched before the scan; the scan is two matmuls per chunk."""
    v, h = block.v, block.h
    NC, BH, G, C, V = v.shape
    K = block.q.shape[-1]
    dx = v.new_empty(NC, BH, G, 2 * C, V)  # [dO; dvb]
    do = dx[..., :C, :]
    dvalues = v.new_empty(NC, BH, G, C, V)  # dU = dL/dvalues
    _to_chunks(do_grad, BH // do_grad.shape[0], out=do)
    torch.bmm(_flat(p).transpose(-1, -2).flatten(0, 1), _flat(do).flatten(0, 1), out=dvalues.flatten(0, 2))
    # dhs[n] = dL/dh[n] (the state entering chunk n of the block); first its (Gam q)^T dO term, batched
    dhs = h.new_empty(NC + 1, BH * G, K, V)
    dhs[NC] = dh
    qg = block.q * decays.gam[..., None]
    torch.bmm(qg.flatten(0, 2).transpose(-1, -2), do.flatten(0, 2), out=dhs[:NC].flatten(0, 1))
    del qg
    kd = block.k * decays.kdecay[..., None]
    gam3 = decays.gam[..., -1].flatten(1)[..., None, None]
    dhl = dhs.unbind(0)
    steps = zip(*(x.unbind(0) for x in (_flat(dvalues), _flat(kd), _flat(block.nw).transpose(-1, -2), gam3)))
    for i, (du, kd_, nwt, gc_) in reversed(list(enumerate(steps))):
        du.baddbmm_(kd_, dhl[i + 1])  # dU[n] += kd dh[n + 1]; dh[n] += Gam_C dh[n + 1] + (-w)^T dU[n]
        dhl[i].addcmul_(dhl[i + 1], gc_).baddbmm_(nwt, du)
    return dx, dvalues, dhs


class _StateGrads(NamedTuple):
    """The gradients that meet the states and ``U``, batched after :func:`_reverse_scan`."""

    dkd: torch.Tensor  #: dL/dkd = U dh[n + 1]^T
    dgam_c: torch.Tensor  #: dL/dGam_C = <h[n], dh[n + 1]>
    dq_g: torch.Tensor  #: dL/d(Gam q) = dO h^T
    dkbg: torch.Tensor  #: -dL/d(beta Gam k) = dvb h^T
    dp: torch.Tensor  #: dL/dP = dO U^T
    na: torch.Tensor  #: -dL/dA = dvb U^T (its strictly lower part is used)


def _through_states(block: Block, *, dx, dvalues, dhs) -> _StateGrads:
    """Batched after the scan; ``dvb = Tm^T dU`` is written into ``dx``'s lower half. As ``[u | -w] = Tm [vb |
    -kbg]``: since dL/d(-w) = dU h[n]^T, -dL/dkbg = Tm^T dU h[n]^T = dvb h[n]^T, and -dL/dA = dvb u^T + (-dL/dkbg)
    (-w)^T = dvb (u - w h[n])^T = dvb U^T. ``dx = [dO; dvb]`` is multiplied by ``h^T`` and ``U^T`` as two matmuls,
    not four (``h``, the largest operand, is read once)."""
    values, h, tm = block.values, block.h, block.tm
    NC, BH, G, C, V = values.shape
    K = block.q.shape[-1]
    dvb = dx[..., C:, :]
    dkd = torch.bmm(values.flatten(0, 2), dhs[1:].flatten(0, 1).transpose(-1, -2)).view(NC, BH, G, C, K)
    torch.bmm(tm.flatten(0, 2).transpose(-1, -2), dvalues.flatten(0, 2), out=dvb.flatten(0, 2))
    dx3 = dx.flatten(0, 2)
    y = torch.bmm(dx3, h[:NC].flatten(0, 1).transpose(-1, -2)).view(NC, BH, G, 2 * C, K)
    dgam_c = torch.linalg.vecdot(h[:NC].flatten(-2), dhs[1:].flatten(-2)).view(NC, BH, G)  # h still warm
    z = torch.bmm(dx3, values.flatten(0, 2).transpose(-1, -2)).view(NC, BH, G, 2 * C, C)
    return _StateGrads(dkd=dkd, dgam_c=dgam_c, dq_g=y[..., :C, :], dkbg=y[..., C:, :], dp=z[..., :C, :],
                       na=z[..., C:, :])


def _through_decays(block: Block, decays: _Decays, grads: _StateGrads, *, p, dvb, scratch):
    """``(dqk, dkk, dgc, dbeta)``: the gradients of ``q k^T``, ``k k^T`` (negated), the cumulated gates and beta,
    through ``P = (q k^T) D``, ``A = beta (k k^T) Ds``, ``Gam``, ``kd = k Gam_C / Gam`` and ``Gam_C``. Overwrites
    ``p``, ``grads.dp`` and ``grads.na``."""
    k, v, beta, kk = block.k, block.v, block.beta, block.kk
    gam, kdecay, decay = decays.gam, decays.kdecay, decays.decay
    # D-chain: e = dL/dD * D; dqk = dP * D; dkk = dA * Ds * beta_i
    e = p.mul_(grads.dp)
    dqk = grads.dp.mul_(decay)
    dkk = grads.na.mul_(decay)  # -dA * Ds: the diagonal of D is 1, zeroed here, its upper triangle is 0
    dkk.diagonal(dim1=-2, dim2=-1).zero_()
    f = kk * dkk  # -dA * kk * Ds
    kb = _rowdot(grads.dkbg, k, scratch)  # -dL/dkbg . k
    dbeta = _rowdot(dvb, v, scratch).sub_(kb * gam).sub_(f.sum(-1))
    e.addcmul_(f, beta[..., :, None], value=-1)
    dkk.mul_(beta[..., :, None])  # -dL/dkk
    del f
    # dgc: through D (rows +, columns -), Gam (q and kbg), kd = k Gam_C / Gam and Gam_C
    kd_dot = _rowdot(grads.dkd, k, scratch).mul_(kdecay)
    dgc = e.sum(-1).sub_(e.sum(-2)).add_(_rowdot(grads.dq_g, block.q, scratch).mul_(gam))
    dgc.sub_(kb.mul_(beta * gam)).sub_(kd_dot)
    dgc[..., -1] += kd_dot.sum(-1) + grads.dgam_c * gam[..., -1]
    return dqk, dkk, dgc, dbeta


def _input_grads(block: Block, decays: _Decays, grads: _StateGrads, *, dqk, dkk, dvb, scale, l2norm, scratch,
                 out) -> None:
    """dq, dk, dv of the raw inputs, written into ``out`` (``_chunk_view``s): through ``q k^T``, ``k k^T``,
    ``Gam q``, ``beta Gam k``, ``kd``, ``beta v``, the l2norm and the scale. Overwrites ``grads.dq_g``, ``dkbg``
    and ``dkd``."""
    q, k, beta = block.q, block.k, block.beta
    gam, kdecay = decays.gam, decays.kdecay
    dqk, dkk = _sum_groups(dqk), _sum_groups(dkk)
    dq = (dqk @ k).add_(_sum_groups(grads.dq_g.mul_(gam[..., None])))
    dk = dqk.transpose(-1, -2) @ q
    dkk3, k3 = dkk.flatten(0, 2), k.flatten(0, 2)
    dk.flatten(0, 2).baddbmm_(dkk3, k3, alpha=-1).baddbmm_(dkk3.transpose(-1, -2), k3, alpha=-1)  # kk = k k^T
    dk.sub_(_sum_groups(grads.dkbg.mul_((beta * gam)[..., None]))).add_(
        _sum_groups(grads.dkd.mul_(kdecay[..., None])))
    dq_out, dk_out, dv_out = out
    split = dq_out.shape[1:3]  # (B, H)
    if l2norm:
        _l2norm_backward(q, dq, block.rq, scale, scratch, out=dq_out)
        _l2norm_backward(k, dk, block.rk, 1.0, scratch, out=dk_out)
    else:
        torch.mul(dq.unflatten(1, split), scale, out=dq_out)
        dk_out.copy_(dk.unflatten(1, split))
    torch.mul(dvb.unflatten(1, split), beta[..., None].unflatten(1, split), out=dv_out)


def _backward_block(block: Block, *, do_grad, dh, scale, l2norm, out):
    """Chunks ``[n0, n1)`` in reverse. ``do_grad [B, (n1 - n0) C, HV, V]``, ``dh`` = dL/d(state leaving chunk
    n1 - 1) ``[BH * G, K, V]``, ``out`` the ``_chunk_view`` of the block's dq, dk, dv (written). Returns the
    chunked ``(dg, dbeta)`` and dL/d(state entering chunk n0).

    Only the reverse state recurrence is sequential (:func:`_reverse_scan`); what does not feed it is batched over
    the block (:func:`_through_states`, :func:`_through_decays`, :func:`_input_grads`)."""
    gc, v = block.gc, block.v
    NC, BH, G, C, V = v.shape
    decays = _Decays(gam=_decay_exp(gc), kdecay=_decay_exp(gc[..., -1:] - gc), decay=_decay(gc))
    p = block.qk * decays.decay
    dx, dvalues, dhs = _reverse_scan(block, decays, p=p, do_grad=do_grad, dh=dh)
    grads = _through_states(block, dx=dx, dvalues=dvalues, dhs=dhs)
    dh = dhs[0]
    del dhs, dvalues
    dvb = dx[..., C:, :]
    scratch = v.new_empty(NC * BH * G * C * max(block.q.shape[-1], V))  # for the row dot products
    dqk, dkk, dgc, dbeta = _through_decays(block, decays, grads, p=p, dvb=dvb, scratch=scratch)
    dg = dgc.flip(-1).cumsum(-1).flip(-1)  # g -> gc is a cumsum: its gradient is the reverse cumsum
    _input_grads(block, decays, grads, dqk=dqk, dkk=dkk, dvb=dvb, scale=scale, l2norm=l2norm, scratch=scratch,
                 out=out)
    return (dg, dbeta), dh


def chunk_forward(q, k, v, g, beta, state, scale: float, l2norm: bool):
    """``(o, final_state, saved)``: the forward of :class:`ChunkGatedDeltaRule`, and the tensors its backward
    needs: each block's :class:`Block` (:func:`_saved_tensors`), concatenated; :func:`chunk_backward` takes them."""
    inputs = (q, k, v, g, beta)
    (B, T, H, K), (HV, V) = q.shape, v.shape[2:]
    NC, BH, G, C = T // CHUNK, B * H, HV // H, CHUNK
    o = v.new_empty(B, T, HV, V)
    state = state.reshape(BH * G, K, V)
    saved, step = [], _block_chunks(BH * G * C * V)
    for n0 in range(0, NC, step):
        nb, tokens = min(step, NC - n0), slice(n0 * C, min(n0 + step, NC) * C)
        chunks = _prepare(inputs, tokens, scale, l2norm)
        qk, kk = q.new_empty(nb, BH, 1, C, C), q.new_empty(nb, BH, 1, C, C)
        values, nw = v.new_empty(nb, BH, G, C, V), v.new_empty(nb, BH, G, C, K)
        h = v.new_empty(nb + 1, BH * G, K, V)  # h[n] enters chunk n of the block
        h[0] = state
        o_ = torch.empty_like(chunks.v)
        tm = _forward_block(chunks, h, qk=qk, kk=kk, values=values, nw=nw, o=o_)
        _store_chunks(o[:, tokens], o_)
        state = h[nb]
        saved += _saved_tensors(Block(**chunks._asdict(), qk=qk, kk=kk, tm=tm, values=values, nw=nw, h=h))
    return o, state.reshape(B, HV, K, V).clone(), saved


def chunk_backward(saved, do_grad, dstate, scale: float, l2norm: bool, H: int, K: int):
    """``(dq, dk, dv, dg, dbeta, dstate_in)`` from :func:`chunk_forward`'s ``saved``, ``do_grad [B, T, HV, V]`` and
    the final state's gradient (``None``: zero)."""
    B, T, HV, V = do_grad.shape
    BH, C, G = B * H, CHUNK, HV // H
    dh = do_grad.new_zeros(BH * G, K, V) if dstate is None else dstate.reshape(BH * G, K, V)
    grads = [do_grad.new_empty(B, T, H, K), do_grad.new_empty(B, T, H, K), do_grad.new_empty(B, T, H * G, V),
             do_grad.new_empty(B, T, H * G), do_grad.new_empty(B, T, H * G)]
    stop = T // C
    for block in reversed(_saved_blocks(saved, l2norm)):
        nb = block.v.shape[0]
        tokens = slice((stop - nb) * C, stop * C)
        out = [_chunk_view(grad[:, tokens], g) for grad, g in zip(grads[:3], (1, 1, G))]
        small, dh = _backward_block(block, do_grad=do_grad[:, tokens], dh=dh, scale=scale, l2norm=l2norm, out=out)
        for grad, x in zip(grads[3:], small):
            _store_chunks(grad[:, tokens], x)
        stop -= nb
    return (*grads, dh.reshape(B, BH * G // B, K, V))


class ChunkGatedDeltaRule(torch.autograd.Function):
    """``o, final_state = f(q, k, v, g, beta, state, scale, l2norm)``.

    q, k ``[B, T, H, K]``, v ``[B, T, HV, V]``, g, beta ``[B, T, HV]``, state ``[B, HV, K, V]``, all in the compute
    dtype, ``T`` a multiple of ``CHUNK``. Returns o ``[B, T, HV, V]`` and the final state ``[B, HV, K, V]``.
    Inside, tensors are ``[nb, B * H, G, C, *]`` (q, k with ``G = 1``, broadcast over the value heads), processed
    in blocks of ``nb`` chunks (``_forward_block``, ``_backward_block``). Each block saves its own small tensors
    (a :class:`Block`) rather than slices of full-size ones: on CPU, buffers of 32 MiB and more are fresh
    memory (page faults) on every call, small ones are recycled by the allocator.
    """

    @staticmethod
    def forward(ctx, q, k, v, g, beta, state, scale, l2norm):
        o, final, saved = chunk_forward(q, k, v, g, beta, state, scale, l2norm)
        ctx.save_for_backward(*saved)
        ctx.scale, ctx.l2norm, ctx.heads = scale, l2norm, q.shape[2:]
        return o, final

    @staticmethod
    def backward(ctx, do_grad, dstate):
        return (*chunk_backward(ctx.saved_tensors, do_grad, dstate, ctx.scale, ctx.l2norm, *ctx.heads), None, None)
