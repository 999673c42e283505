"""``python -m sp_kernels selftest``: every implementation that can run on this device, against the float64 references.

For each op and each of a few small cases (a length that is not a multiple of the 64-token chunk, one token,
grouped heads, packed sequences with ``cu_seqlens``; fp32 and bf16), every registered implementation whose
``check`` accepts the case on this device runs forward and backward through the public op (``impl=`` forcing it).
Its outputs and gradients are compared with the op's ``reference`` implementation run in float64 on the CPU from the
same rounded inputs and the same output cotangents. An implementation whose check accepts the case only without
gradients (a forward-only decoding kernel) runs forward only; one that the check rejects is listed with the reason
and not run. Nothing here names an implementation other than the reference: what runs is what the registry holds.

Each run is also timed (median of :data:`REPEATS`, forward, or forward + backward) against the op's torch path
(:func:`torch_path`) on the same case. At these small shapes the times mostly measure launch overhead: they say
that an implementation is not pathologically slow, not how fast it is at a model's shapes (``bench`` does that).

Exit code: 0 when every run matches, 1 on any mismatch or error (or when nothing ran).
"""
from __future__ import annotations

import json
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from sp_kernels.dispatch import OPS, Context, DeviceProfile, detect, implementations, preference

REFERENCE = "reference"
#: ``(atol, rtol)`` per input dtype: a tensor matches when ``|got - want| <= atol + rtol * |want|`` everywhere
#: (NaN / inf never match). fp32 leaves room for TF32: Triton's ``tl.dot`` on fp32 inputs uses TF32 (10-bit
#: mantissa) on sm80+ by default. bf16: 8-bit mantissa, with fp32 accumulation inside the kernels.
TOLERANCES = {
    torch.float64: (1e-9, 1e-9),
    torch.float32: (5e-3, 5e-3),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (5e-2, 5e-2),
}
DTYPES = (torch.float32, torch.bfloat16)
REPEATS = 5


def _short(dtype: torch.dtype) -> str:
    return {torch.float64: "fp64", torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


# --- cases -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One call of an op: ``shapes``, ``packed`` and ``options`` as the op's ``api.py`` gives them to the selector;
    ``make(gen, dtype)`` draws the inputs (CPU tensors in the dtypes of the call, ``cu_seqlens`` included) and the
    other keyword arguments; ``grads`` are the inputs whose gradients are compared."""

    op: str
    name: str
    shapes: dict
    make: Callable = field(repr=False)
    grads: tuple[str, ...] = ()
    packed: bool = False
    options: dict = field(default_factory=dict)


def _randn(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _cu(lengths) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.long)


def _delta_rule(name, B, T, H, HV, K, V, lengths=None, h0=True, final=True) -> Case:
    N = B if lengths is None else len(lengths)

    def make(gen, dtype):
        low = dtype in (torch.bfloat16, torch.float16)
        # as transformers calls it: q, k, v, beta in the model's dtype, the decay g (and the state) in float32
        gate = torch.float32 if low else dtype
        t = {"q": _randn(gen, B, T, H, K).to(dtype), "k": _randn(gen, B, T, H, K).to(dtype),
             "v": _randn(gen, B, T, HV, V).to(dtype), "g": F.logsigmoid(_randn(gen, B, T, HV)).to(gate),
             "beta": _randn(gen, B, T, HV).sigmoid().to(dtype)}
        if h0:
            t["initial_state"] = _randn(gen, N, HV, K, V).to(gate)
        kw = {"output_final_state": final, "use_qk_l2norm_in_kernel": True}
        if lengths is not None:
            kw["cu_seqlens"] = _cu(lengths)
        return t, kw

    grads = ("q", "k", "v", "g", "beta") + (("initial_state",) if h0 else ())
    return Case("chunk_gated_delta_rule", name, {"B": B, "T": T, "H": H, "HV": HV, "K": K, "V": V}, make, grads,
                packed=lengths is not None)


def _conv(name, B, T, D, W, lengths=None, activation="silu", bias=True, h0=True) -> Case:
    N = B if lengths is None else len(lengths)

    def make(gen, dtype):
        t = {"x": _randn(gen, B, T, D).to(dtype), "weight": (_randn(gen, D, W) / W**0.5).to(dtype)}
        if bias:
            t["bias"] = _randn(gen, D).to(dtype)
        if h0:
            t["initial_state"] = _randn(gen, N, D, W - 1).to(dtype)
        kw = {"activation": activation, "output_final_state": True}
        if lengths is not None:
            kw["cu_seqlens"] = _cu(lengths)
        return t, kw

    return Case("causal_conv1d", name, {"B": B, "T": T, "D": D, "W": W}, make, tuple(
        n for n, on in (("x", True), ("weight", True), ("bias", bias), ("initial_state", h0)) if on),
        packed=lengths is not None, options={"activation": activation})


def _rotary(name, B, T, H, HK, D, R, unsqueeze_dim=1, shared=False) -> Case:
    def make(gen, dtype):
        heads = (lambda h: (B, h, T, D)) if unsqueeze_dim == 1 else (lambda h: (B, T, h, D))
        angles = _randn(gen, 1 if shared else B, T, R // 2) * 3
        cos, sin = (torch.cat([f(angles)] * 2, -1).to(dtype) for f in (torch.cos, torch.sin))
        return {"q": _randn(gen, *heads(H)).to(dtype), "k": _randn(gen, *heads(HK)).to(dtype), "cos": cos,
                "sin": sin}, {"unsqueeze_dim": unsqueeze_dim}

    return Case("apply_rotary_pos_emb", name, {"B": B, "T": T, "H": H, "HK": HK, "D": D, "R": R}, make, ("q", "k"),
                options={"unsqueeze_dim": unsqueeze_dim})


def _attention(name, B, TQ, TK, H, HKV, D, causal=True, lengths=None) -> Case:
    def make(gen, dtype):
        t = {"q": _randn(gen, B, TQ, H, D).to(dtype), "k": _randn(gen, B, TK, HKV, D).to(dtype),
             "v": _randn(gen, B, TK, HKV, D).to(dtype)}
        kw = {"causal": causal}
        if lengths is not None:
            kw["cu_seqlens"] = _cu(lengths)
        return t, kw

    return Case("fusion_attention", name, {"B": B, "TQ": TQ, "TK": TK, "H": H, "HKV": HKV, "D": D, "DV": D}, make,
                ("q", "k", "v"), packed=lengths is not None, options={"causal": causal})


CASES: tuple[Case, ...] = (
    _delta_rule("T70 HV=2H", 2, 70, 2, 4, 64, 32, h0=False),
    _delta_rule("T1 HV=2H state", 2, 1, 2, 4, 64, 32),
    _delta_rule("packed 13+1+66", 1, 80, 2, 4, 32, 32, lengths=(13, 1, 66)),
    _delta_rule("packed 5+1+6", 1, 12, 1, 3, 32, 16, lengths=(5, 1, 6)),
    _conv("T70 D96 bias state", 2, 70, 96, 4),
    _conv("T1 D64 state", 2, 1, 64, 4, bias=False),
    _conv("packed 2+1+47 no-act", 1, 50, 64, 4, lengths=(2, 1, 47), activation=None),
    _rotary("T33 H4 HK2 D64 R32", 2, 33, 4, 2, 64, 32),
    _rotary("T1 BTHD D32 full", 2, 1, 4, 1, 32, 32, unsqueeze_dim=2, shared=True),
    _attention("T40 H4 HKV2 causal", 2, 40, 40, 4, 2, 64),
    _attention("TQ1 TK33 HKV1 causal", 2, 1, 33, 4, 1, 64),
    _attention("packed 17+1+42", 1, 60, 60, 4, 2, 64, lengths=(17, 1, 42)),
    _attention("TQ20 TK30 non-causal", 2, 20, 30, 4, 2, 32, causal=False),
)


def _public(op: str) -> Callable:
    import sp_kernels

    return {"chunk_gated_delta_rule": sp_kernels.chunk_gated_delta_rule, "causal_conv1d": sp_kernels.causal_conv1d,
            "apply_rotary_pos_emb": sp_kernels.apply_rotary_pos_emb, "fusion_attention": sp_kernels.fusion_attention}[op]


def torch_path(op: str) -> str | None:
    """The op's torch path, the baseline of the times: its implementation named ``torch``; an op without one
    (attention: ``sdpa``) the last, in its order of preference, of the selectable ones that run on every device."""
    table = implementations(op)
    if "torch" in table:
        return "torch"
    portable = [n for n, i in table.items() if i.selectable and {"cpu", "cuda", "npu"} <= set(i.device_types)]
    order = preference(op)
    portable.sort(key=lambda n: order.index(n) if n in order else len(order))
    return portable[-1] if portable else None


def _ranked(op: str) -> list[str]:
    order = preference(op)
    table = implementations(op)
    return sorted((n for n in table if n != REFERENCE),
                  key=lambda n: (-table[n].priority, order.index(n) if n in order else len(order), n))


# --- running ------------------------------------------------------------------------------------------------------

@dataclass
class Row:
    op: str
    implementation: str
    case: str
    dtype: str
    status: str  # "ok", "mismatch", "error", "not run"
    mode: str = ""  # "fwd+bwd" or "fwd"
    fwd_error: float | None = None
    bwd_error: float | None = None
    err_over_tol: float | None = None  # max of |got - want| / (atol + rtol * |want|) over every tensor: <= 1 matches
    atol: float | None = None
    rtol: float | None = None
    ms: float | None = None
    torch_ms: float | None = None
    vs_torch: float | None = None
    detail: str = ""  # the reason it did not run, the mismatching tensors, the error


def _sync(device: torch.device) -> None:
    module = getattr(torch, device.type, None)
    if device.type != "cpu" and hasattr(module, "synchronize"):
        module.synchronize()


def _outputs(out) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


class _Runner:
    """Runs the implementations of one case on ``device`` and the reference once, on the CPU in float64."""

    def __init__(self, case: Case, dtype: torch.dtype, device: torch.device, seed: int):
        self.case, self.dtype, self.device = case, dtype, device
        gen = torch.Generator().manual_seed(seed)
        tensors, self.kwargs = case.make(gen, dtype)
        self.fn = _public(case.op)
        cpu = torch.device("cpu")
        # the inputs, once per device (copies: nothing a run does reaches them), and the float64 ones of the reference
        self.inputs = {device: {n: t.to(device, copy=True) for n, t in tensors.items()},
                       "float64": {n: t.to(cpu, torch.float64, copy=True) for n, t in tensors.items()}}
        self.cotangents = None
        self._cot: dict = {}
        leaves, kwargs = self._prepare("float64", cpu, backward=True)
        out = [o for o in _outputs(self.fn(**leaves, **kwargs, impl=REFERENCE)) if o is not None]
        # the cotangents of the outputs, rounded to the case's dtype: exactly the same numbers whatever an
        # implementation's output dtype (bf16 o, fp32 state)
        self.cotangents = [_randn(gen, *o.shape).to(dtype).double() for o in out]
        self.reference = self._backward(out, leaves, self.cotangents)

    def _prepare(self, key, device, backward: bool):
        """Fresh leaves (the inputs the case differentiates require grad) and the other keyword arguments."""
        leaves = {n: t.detach().clone().requires_grad_(backward and n in self.case.grads)
                  for n, t in self.inputs[key].items()}
        kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.kwargs.items()}
        return leaves, kwargs

    def _backward(self, out, leaves, cotangents):
        names = [n for n in self.case.grads if leaves[n].requires_grad]
        pairs = [(o, c) for o, c in zip(out, cotangents) if o.requires_grad]
        got = torch.autograd.grad([o for o, _ in pairs], [leaves[n] for n in names], [c for _, c in pairs],
                                  allow_unused=True) if pairs else [None] * len(names)
        return out, dict(zip(names, got))

    def _run(self, impl, backward, leaves, kwargs):
        if not backward:
            with torch.no_grad():
                return [o for o in _outputs(self.fn(**leaves, **kwargs, impl=impl)) if o is not None], {}
        out = [o for o in _outputs(self.fn(**leaves, **kwargs, impl=impl)) if o is not None]
        cot = []
        for c, o in zip(self.cotangents, out):
            key = (id(c), o.dtype)
            if key not in self._cot:
                self._cot[key] = c.to(self.device, o.dtype)
            cot.append(self._cot[key])
        return self._backward(out, leaves, cot)

    def timed(self, impls: list[str], backward: bool) -> list[float]:
        """Median wall time in ms of ``REPEATS`` calls of each implementation (after a warm-up; the inputs are
        made before the clock starts), synchronised; the implementations take turns, so a machine that gets busier
        slows them alike."""
        times: list[list[float]] = [[] for _ in impls]
        for impl in impls:
            self._run(impl, backward, *self._prepare(self.device, self.device, backward))
        for _ in range(REPEATS):
            for impl, spent in zip(impls, times):
                args = self._prepare(self.device, self.device, backward)
                _sync(self.device)
                start = time.perf_counter()
                self._run(impl, backward, *args)
                _sync(self.device)
                spent.append((time.perf_counter() - start) * 1e3)
        return [statistics.median(t) for t in times]

    def compare(self, impl: str, backward: bool) -> tuple[float, float | None, float, list[str]]:
        """Max abs error of the outputs and of the gradients, the largest error in units of the tolerance, and the
        tensors that do not match."""
        atol, rtol = TOLERANCES[self.dtype]
        out, grads = self._run(impl, backward, *self._prepare(self.device, self.device, backward))
        ref_out, ref_grads = self.reference
        bad: list[str] = []
        ratios = [0.0]

        def err(name, got, want):
            if got is None:
                bad.append(f"{name}: no gradient")
                ratios.append(math.inf)
                return math.inf
            got = got.detach().to("cpu", torch.float64)
            if got.shape != want.shape:
                bad.append(f"{name}: shape {list(got.shape)}, expected {list(want.shape)}")
                ratios.append(math.inf)
                return math.inf
            diff = (got - want).abs()
            if not diff.numel():
                return 0.0
            finite = bool(torch.isfinite(diff).all())  # NaN / inf: an unbounded error
            worst = diff.max().item() if finite else math.inf
            ratio = (diff / (atol + rtol * want.abs())).max().item() if finite else math.inf
            ratios.append(ratio)
            if not finite:
                bad.append(f"{name}: not finite (NaN or inf)")
            elif not bool((diff <= atol + rtol * want.abs()).all()):
                bad.append(f"{name}: max |err| {worst:.2e} ({ratio:.2g}x tol)")
            return worst

        names = OUTPUT_NAMES[self.case.op]
        if len(out) != len(ref_out):
            bad.append(f"outputs: {len(out)}, expected {len(ref_out)}")
        fwd = max((err(names[i], o, r) for i, (o, r) in enumerate(zip(out, ref_out))), default=0.0)
        bwd = max((err("d" + n, grads.get(n), ref_grads[n]) for n in ref_grads), default=0.0) if backward else None
        return fwd, bwd, max(ratios), bad


OUTPUT_NAMES = {"chunk_gated_delta_rule": ("o", "final_state"), "causal_conv1d": ("y", "final_state"),
                "apply_rotary_pos_emb": ("q_out", "k_out"), "fusion_attention": ("o",)}


def _plan(impl, ctx_grad: Context, ctx_fwd: Context) -> tuple[str | None, str]:
    """``('fwd+bwd' | 'fwd' | None, why)`` for one implementation on one case: why it runs forward only (the reason
    its check gives with gradients), or why it does not run."""
    if not impl.selectable:
        return None, "not selectable: used only when forced"
    ok, why = impl.check(ctx_grad)
    if ok:
        return "fwd+bwd", ""
    ok_fwd, why_fwd = impl.check(ctx_fwd)
    if ok_fwd:
        return "fwd", why  # why the check refuses gradients
    return None, why_fwd


def _one_line(exc: Exception) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:300]}"


def run_case(case: Case, dtype: torch.dtype, device: torch.device, profile: DeviceProfile, seed: int,
             names: list[str] | None = None) -> list[Row]:
    """The rows of one case: every implementation of the op (``names``, default all but the reference)."""
    ctx = dict(op=case.op, device=profile, dtype=dtype, shapes=case.shapes, packed=case.packed, options=case.options)
    ctx_grad, ctx_fwd = Context(**ctx, requires_grad=True), Context(**ctx, requires_grad=False)
    table = implementations(case.op)
    atol, rtol = TOLERANCES[dtype]
    base = torch_path(case.op)
    try:
        base_plan = _plan(table[base], ctx_grad, ctx_fwd)[0] if base else None
    except Exception:  # its own row reports the error
        base_plan = None
    base_can = {"fwd+bwd": base_plan == "fwd+bwd", "fwd": base_plan is not None}
    runner = None
    rows = []
    for name in names if names is not None else _ranked(case.op):
        row = Row(case.op, name, case.name, _short(dtype), "not run")
        try:
            mode, why = _plan(table[name], ctx_grad, ctx_fwd)
        except Exception as exc:  # a check that raises is a bug of the implementation's registration
            row.status, row.detail = "error", f"its check raised {_one_line(exc)}"
            rows.append(row)
            continue
        row.detail = why
        if mode is None:
            rows.append(row)
            continue
        row.mode, row.atol, row.rtol = mode, atol, rtol
        backward = mode == "fwd+bwd"
        try:
            if runner is None:
                runner = _Runner(case, dtype, device, seed)
            row.fwd_error, row.bwd_error, row.err_over_tol, bad = runner.compare(name, backward)
            row.status = "mismatch" if bad else "ok"
            if bad:
                row.detail = "; ".join(bad) + (f" (forward only: {why})" if why else "")
            if not base_can[mode] or name == base:
                row.ms = runner.timed([name], backward)[0]
                row.torch_ms = row.ms if name == base else None
            else:
                row.ms, row.torch_ms = runner.timed([name, base], backward)
            if row.torch_ms:
                row.vs_torch = row.ms / row.torch_ms
        except Exception as exc:  # an implementation that raises is a failure to report, not a crash
            row.status, row.detail = "error", _one_line(exc)
        rows.append(row)
    return rows


# --- report -------------------------------------------------------------------------------------------------------

def _fmt(x, spec) -> str:
    return "-" if x is None else format(x, spec)


COLUMNS = ("op", "implementation", "case", "dtype", "pass", "max|err| fwd", "max|err| bwd", "err/tol", "ms",
           "vs torch", "result")


def _cells(row: Row) -> tuple[str, ...]:
    return (row.op, row.implementation, row.case, row.dtype, row.mode, _fmt(row.fwd_error, ".1e"),
            _fmt(row.bwd_error, ".1e"), _fmt(row.err_over_tol, ".2f"), _fmt(row.ms, ".2f"), _fmt(row.vs_torch, ".2f") +
            ("x" if row.vs_torch is not None else ""), row.status.upper() if row.status != "ok" else "ok")


def render(rows: list[Row]) -> str:
    ran = [r for r in rows if r.status != "not run"]
    cells = [COLUMNS] + [_cells(r) for r in ran]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    failed = [r for r in ran if r.status != "ok"]
    if failed:
        lines += ["", "failures:"]
        lines += [f"  {r.op} {r.implementation} [{r.case}, {r.dtype}] {r.status}: {r.detail}" for r in failed]
    notes = {}
    for r in ran:
        if r.status == "ok" and r.detail:  # forward only, and why
            notes.setdefault((r.op, r.implementation, r.detail), []).append(f"{r.case} {r.dtype}")
    skipped = {}
    for r in rows:
        if r.status == "not run":
            skipped.setdefault((r.op, r.implementation, r.detail), []).append(f"{r.case} {r.dtype}")
    per_impl = {}
    for r in rows:
        per_impl.setdefault((r.op, r.implementation), 0)
        per_impl[(r.op, r.implementation)] += 1
    for title, groups in (("forward only:", notes), ("not run here:", skipped)):
        if groups:
            lines += ["", title]
        for (op, name, why), cases in groups.items():
            which = "all cases" if len(cases) == per_impl[(op, name)] else ", ".join(cases)
            lines.append(f"  {op} {name} [{which}]: {why}")
    return "\n".join(lines)


def _json_value(v):
    return str(v) if isinstance(v, float) and not math.isfinite(v) else v  # strict JSON has no inf / nan


def present_device() -> torch.device:
    """CUDA if torch sees a GPU, else an NPU if torch_npu sees one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    try:
        import torch_npu  # noqa: F401

        if torch.npu.is_available():
            return torch.device("npu")
    except Exception:
        pass
    return torch.device("cpu")


def run(device: torch.device | None = None, ops=None, json_path: str | None = None, seed: int = 0,
        out=print) -> int:
    """Run the self-test on ``device`` (default :func:`present_device`) for ``ops`` (default all); print the table
    and the verdict; write the JSON report to ``json_path``. Returns the exit code: 0 all match, 1 otherwise."""
    start = time.perf_counter()
    device = present_device() if device is None else torch.device(device)
    profile = detect(device)
    ops = tuple(OPS if not ops else ops)
    out(f"selftest on {profile.describe()} (torch {torch.__version__}); every implementation the registry holds, "
        f"against the float64 references on the CPU")
    out("tolerances (atol = rtol): " + ", ".join(f"{_short(d)} {TOLERANCES[d][0]:.0e}" for d in DTYPES)
        + f"; ms: median of {REPEATS}; vs torch: time / the torch path's time on the same case")
    out("")
    rows: list[Row] = []
    for op in ops:
        names = _ranked(op)
        cases = [c for c in CASES if c.op == op]
        got = [run_case(case, dtype, device, profile, seed, names) for case in cases for dtype in DTYPES]
        rows += [row for name in names for case_rows in got for row in case_rows if row.implementation == name]
    seconds = round(time.perf_counter() - start, 1)
    ran = [r for r in rows if r.status != "not run"]
    failed = [r for r in ran if r.status != "ok"]
    verdict = "ok" if ran and not failed else "fail"
    out(render(rows))
    out("")
    tested = sorted({(r.op, r.implementation) for r in ran})
    out(f"{len(ran)} runs of {len(tested)} implementations ({', '.join(f'{o}/{n}' for o, n in tested)}): "
        f"{len(ran) - len(failed)} ok, {sum(r.status == 'mismatch' for r in failed)} mismatch, "
        f"{sum(r.status == 'error' for r in failed)} error; "
        f"{len(rows) - len(ran)} not run here. {'OK' if verdict == 'ok' else 'FAILED'} in {seconds:.1f} s")
    if not ran:
        out("nothing ran: no implementation can run on this device")
    if json_path is not None:
        report = {
            "device": {**asdict(profile), "spec": profile.spec, "description": profile.describe(),
                       "torch": torch.__version__, "python": platform.python_version(),
                       "machine": platform.machine()},
            "ops": list(ops),
            "seed": seed,
            "tolerances": {_short(d): {"atol": a, "rtol": r} for d, (a, r) in TOLERANCES.items()},
            "repeats": REPEATS,
            "rows": [{k: _json_value(v) for k, v in asdict(r).items()} for r in rows],
            "verdict": verdict,
            "failures": [f"{r.op}/{r.implementation} [{r.case}, {r.dtype}]: {r.detail}" for r in failed],
            "seconds": seconds,
        }
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1, default=str)
    return 0 if verdict == "ok" else 1
