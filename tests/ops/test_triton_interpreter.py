"""Our portable Triton kernels on CPU through the Triton interpreter, against the float64 references.

triton reads ``TRITON_INTERPRET`` when ``@triton.jit`` decorates a function, and that includes triton's own
library functions (``tl.cdiv``, ``tl.sigmoid``, ...) decorated when ``triton`` is first imported (``import torch``
may already do it). So the interpreter must be on before triton is imported: the kernel tests (``@interpreted``)
run in one subprocess with ``TRITON_INTERPRET=1`` (the ``interpreter_results`` fixture), and in this process each
of them reports its own outcome there; the pure tile / launch / spec tests run here. Nothing leaks into other tests
or into the subprocesses they start (``test_transformers_compat`` needs fla to fail on CPU; the compile check needs
real ``JITFunction`` s).

The implementation functions are called directly (the registry would not choose them for CPU tensors), with
explicit small tiles so that every kernel sees several tiles, tails, masks and the persistent-grid loop.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import sp_kernels  # noqa: F401  (registers the implementations)
from sp_kernels.dispatch import Context, resolve_profile, select, ub
from sp_kernels.kernels.causal_conv1d.naive import causal_conv1d_reference
from sp_kernels.kernels.chunk_gated_delta_rule.naive import naive_recurrent_gated_delta_rule
from sp_kernels.kernels.apply_rotary_pos_emb.naive import rotary_reference

pytest.importorskip("triton")

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[2]
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
#: the ops with Triton kernels, and each one's modules by role: ``kernels`` (``@triton.jit``), ``plan`` (pure tile
#: plan: the launches), ``launch`` (runs them), ``specs`` (compile specs)
OPS = {"conv": "sp_kernels.kernels.causal_conv1d", "rotary": "sp_kernels.kernels.apply_rotary_pos_emb",
       "gdr": "sp_kernels.kernels.chunk_gated_delta_rule"}
ROLES = ("kernels", "plan", "launch", "specs")
#: the ``@interpreted`` tests' names, which the interpreter subprocess runs
_INTERPRETED_TESTS = []


def interpreted(test):
    """A kernel test: it runs in the interpreter subprocess; here it passes, fails or skips as it did there."""
    _INTERPRETED_TESTS.append(test.__name__)
    if INTERPRETED:
        return test

    @functools.wraps(test)
    def outcome_in_the_interpreter(request, interpreter_run, **_):
        name = request.node.name
        assert name in interpreter_run.results, f"{name} did not run in the subprocess:\n{interpreter_run.output}"
        outcome, text = interpreter_run.results[name]
        if outcome == "skipped":
            pytest.skip(f"skipped in the interpreter subprocess: {text}")
        if outcome != "passed":
            pytest.fail(f"{outcome} in the interpreter subprocess (TRITON_INTERPRET=1):\n{text}", pytrace=False)

    # the test's own parameters (its fixtures, its parametrize arguments) and the two fixtures this side needs
    extra = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ("request", "interpreter_run")]
    outcome_in_the_interpreter.__signature__ = inspect.signature(test).replace(
        parameters=extra + list(inspect.signature(test).parameters.values()))
    return outcome_in_the_interpreter


@pytest.fixture(scope="module")
def interpreter_run(tmp_path_factory):
    """The ``@interpreted`` tests, run once in a subprocess with ``TRITON_INTERPRET=1``: each test's outcome there
    (``results``: {test name: (outcome, failure text or skip reason)}) and the run's output tail."""
    xml = tmp_path_factory.mktemp("interpreter") / "junit.xml"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    tests = [f"{__file__}::{name}" for name in _INTERPRETED_TESTS]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
                          *tests], capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    output = run.stdout[-6000:] + run.stderr[-3000:]
    results = {}
    for case in ET.parse(xml).iter("testcase") if xml.exists() else ():
        bad = [c for c in case if c.tag in ("failure", "error", "skipped")]
        results[case.get("name")] = ("passed", "") if not bad else (
            bad[0].tag, bad[0].get("message", "") if bad[0].tag == "skipped" else bad[0].text or "")
    return SimpleNamespace(results=results, output=output)


@pytest.fixture(scope="module")
def tk():
    # (importlib: ``sp_kernels.causal_conv1d`` the attribute is the op function, not the package)
    return SimpleNamespace(**{op: SimpleNamespace(**{role: importlib.import_module(f"{package}.triton_{role}")
                                                     for role in ROLES})
                              for op, package in OPS.items()})


@interpreted
def test_the_kernels_are_interpreted(tk):
    from triton.runtime.interpreter import InterpretedFunction

    assert isinstance(tk.conv.kernels.causal_conv1d_fwd_kernel, InterpretedFunction)
    import triton.language as tl

    assert isinstance(tl.cdiv, InterpretedFunction)  # triton's own library functions too


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _fwd_bwd(fn, leaves: dict, seed=100, **kw):
    """Forward + autograd.grad of a random projection of every output wrt every tensor input (float64 results)."""
    outs = [o for o in fn(**leaves, **kw) if o is not None]
    loss = sum((o.to(F64) * _randn(*o.shape, seed=seed + i)).sum() for i, o in enumerate(outs))
    names = [k for k, t in leaves.items() if isinstance(t, torch.Tensor) and t.requires_grad]
    grads = torch.autograd.grad(loss, [leaves[k] for k in names], allow_unused=True, materialize_grads=True)
    return [o.detach().to(F64) for o in outs], {k: g.to(F64) for k, g in zip(names, grads)}


def _compare(fn, ref, inputs: dict, tol=1e-5, **kw):
    got = _fwd_bwd(fn, {k: (v.float().requires_grad_() if isinstance(v, torch.Tensor) else v)
                        for k, v in inputs.items()}, **kw)
    want = _fwd_bwd(ref, {k: (v.clone().requires_grad_() if isinstance(v, torch.Tensor) else v)
                          for k, v in inputs.items()}, **kw)
    assert len(got[0]) == len(want[0])
    for a, b in zip(got[0], want[0]):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)
    assert got[1].keys() == want[1].keys()
    for k in got[1]:
        torch.testing.assert_close(got[1][k], want[1][k], atol=tol, rtol=tol, msg=lambda m: f"grad {k}: {m}")


# --- causal conv1d -----------------------------------------------------------------------------------------------

SMALL_CONV = {"fwd": {"BT": 16, "BD": 32, "grid": 3}, "bwd": {"BT": 16, "BD": 32, "grid": 3, "groups": 2}}

CONV_CASES = [
    # B, T, D, W, bias, activation, state, final, cu_seqlens
    pytest.param(2, 37, 45, 4, True, "silu", True, True, None, id="oddT-oddD-silu-state"),
    pytest.param(2, 37, 45, 4, False, None, False, False, None, id="oddT-oddD-plain"),
    pytest.param(3, 1, 45, 4, True, "swish", True, True, None, id="T1-swish"),
    pytest.param(2, 2, 5, 4, True, "silu", True, True, None, id="T<W-1"),
    pytest.param(1, 9, 4, 2, True, None, True, True, None, id="W2"),
    pytest.param(2, 5, 3, 1, True, "silu", False, True, None, id="W1-empty-state"),
    pytest.param(1, 20, 45, 4, True, "silu", True, True, [0, 7, 8, 8, 20], id="packed-len1-len0"),
    pytest.param(1, 20, 45, 4, False, None, False, True, [0, 1, 20], id="packed-no-state"),
]


@interpreted
@pytest.mark.parametrize("B,T,D,W,bias,activation,state,final,cu", CONV_CASES)
def test_causal_conv1d_matches_reference(tk, B, T, D, W, bias, activation, state, final, cu):
    n = B if cu is None else len(cu) - 1
    seed = B + T + D + W
    inputs = {
        "x": _randn(B, T, D, seed=seed),
        "weight": _randn(D, W, seed=seed + 1) / W**0.5,
        "bias": _randn(D, seed=seed + 2) if bias else None,
        "initial_state": _randn(n, D, W - 1, seed=seed + 3) if state else None,
    }
    kw = dict(activation=activation, output_final_state=final,
              cu_seqlens=None if cu is None else torch.tensor(cu))
    _compare(lambda **a: tk.conv.launch.causal_conv1d_triton(**a, tile=SMALL_CONV), causal_conv1d_reference, inputs,
             **kw)


@interpreted
def test_causal_conv1d_default_tiles(tk):
    inputs = {"x": _randn(1, 21, 40, seed=1), "weight": _randn(40, 4, seed=2), "bias": _randn(40, seed=3),
              "initial_state": _randn(1, 40, 3, seed=4)}
    _compare(tk.conv.launch.causal_conv1d_triton, causal_conv1d_reference, inputs, activation="silu",
             output_final_state=True)


# --- rotary ------------------------------------------------------------------------------------------------------

ROTARY_CASES = [
    # B, H, HK, T, D, R, unsqueeze_dim, cos batch
    pytest.param(2, 3, 1, 37, 45, 20, 1, 1, id="partial-oddD-gqa-bhtd-cosB1"),
    pytest.param(2, 4, 2, 5, 16, 16, 2, 2, id="full-bthd-cosB"),
    pytest.param(1, 2, 2, 1, 6, 4, 1, 1, id="T1-partial"),
    pytest.param(2, 3, 3, 17, 46, 44, 2, 1, id="partial-tail2-bthd"),
]


@interpreted
@pytest.mark.parametrize("B,H,HK,T,D,R,ud,cb", ROTARY_CASES)
def test_rotary_matches_reference(tk, B, H, HK, T, D, R, ud, cb):
    qs, ks = ((B, H, T, D), (B, HK, T, D)) if ud == 1 else ((B, T, H, D), (B, T, HK, D))
    inputs = {"q": _randn(*qs, seed=1), "k": _randn(*ks, seed=2), "cos": _randn(cb, T, R, seed=3),
              "sin": _randn(cb, T, R, seed=4)}
    small = {"fwd": {"BT": 8, "grid": 3}, "bwd": {"BT": 8, "grid": 3}}
    _compare(lambda **a: tk.rotary.launch.rotary_triton(**a, tile=small), rotary_reference, inputs, unsqueeze_dim=ud)
    _compare(tk.rotary.launch.rotary_triton, rotary_reference, inputs, unsqueeze_dim=ud)  # default (CPU) tiles


# --- fused recurrent gated delta rule (forward only) -------------------------------------------------------------

GDR_CASES = [
    # B, T, H, HV, K, V, cu_seqlens, l2norm, state, final
    pytest.param(2, 5, 1, 2, 12, 20, None, True, True, True, id="gva-oddK-Vtail-l2"),
    pytest.param(1, 9, 2, 4, 8, 6, [0, 1, 4, 4, 9], True, True, True, id="packed-len1-len0"),
    pytest.param(3, 1, 2, 2, 16, 16, None, False, False, True, id="decode-T1"),
    pytest.param(1, 7, 1, 3, 5, 33, None, False, True, False, id="no-final"),
]


@interpreted
@pytest.mark.parametrize("B,T,H,HV,K,V,cu,l2,state,final", GDR_CASES)
def test_fused_recurrent_forward_matches_reference(tk, B, T, H, HV, K, V, cu, l2, state, final):
    n = B if cu is None else len(cu) - 1
    g = torch.Generator().manual_seed(T + K + V)
    inputs = {
        "q": _randn(B, T, H, K, seed=1), "k": _randn(B, T, H, K, seed=2), "v": _randn(B, T, HV, V, seed=3),
        "g": -torch.rand(B, T, HV, generator=g, dtype=F64), "beta": torch.rand(B, T, HV, generator=g, dtype=F64),
        "initial_state": _randn(n, HV, K, V, seed=4) if state else None,
    }
    kw = dict(scale=K**-0.5, output_final_state=final, cu_seqlens=None if cu is None else torch.tensor(cu),
              use_qk_l2norm_in_kernel=l2)
    want = naive_recurrent_gated_delta_rule(**inputs, **kw)
    f32 = {k: (v.float() if v is not None else None) for k, v in inputs.items()}
    for tile in ({"BV": 16, "grid": 3}, None):
        got = tk.gdr.launch.fused_recurrent_gated_delta_rule_triton(**f32, **kw, tile=tile)
        assert got[0].dtype == torch.float32 and not got[0].requires_grad
        torch.testing.assert_close(got[0].double(), want[0], atol=1e-5, rtol=1e-5)
        if final:
            assert got[1].dtype == torch.float32
            torch.testing.assert_close(got[1].double(), want[1], atol=1e-5, rtol=1e-5)
        else:
            assert got[1] is None


# --- pure tile / launch functions --------------------------------------------------------------------------------

NPU = resolve_profile("npu:Ascend910B3")
CUDA = resolve_profile("cuda:sm90")
DTYPES = (torch.bfloat16, torch.float16, torch.float32)
LENGTHS = (1, 37, 63, 4096, 65536, 2**20)


def _check_npu(launches, dtype):
    for launch in launches:
        assert launch.grid <= 65535 and launch.grid <= NPU.vector_cores, launch.describe()
        est = ub.estimate(launch.kernel, arch=NPU, dtype=dtype, **launch.tile)
        assert est.fits_double_buffered, f"{launch.describe()}: {est}"


def _check_cuda(launches, dtype):
    for launch in launches:
        tile = dict(launch.tile)
        if "BH" in tile:  # rotary: the counted model takes one head's width
            tile = {"BT": tile["BT"], "BD": 2 * tile["BH"] + tile["BP"]}
        single, _ = ub.COUNTED[launch.kernel].bytes(dtype.itemsize, **tile)  # (CUDA: counted, not the UB fit)
        assert single <= CUDA.shared_memory_bytes, launch.describe()
        assert launch.grid <= CUDA.max_grid


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_conv_tiles_fit(tk, dtype):
    for D in sorted(set(tk.conv.specs.QWEN_D) | {1, 45, 16384}):
        for T in LENGTHS:
            for B in (1, 8):
                ctx = Context("causal_conv1d", NPU, dtype, {"B": B, "T": T, "D": D, "W": 4}, requires_grad=True)
                launches = tk.conv.plan.launches(ctx)
                assert [l.kernel for l in launches] == ["ours.causal_conv1d_fwd", "ours.causal_conv1d_bwd"]
                _check_npu(launches, dtype)
                cuda = Context("causal_conv1d", CUDA, dtype, ctx.shapes, requires_grad=True)
                _check_cuda(tk.conv.plan.launches(cuda), dtype)
    # packed: the total length bounds the work; still the persistent grid
    ctx = Context("causal_conv1d", NPU, dtype, {"B": 1, "T": 2**20, "D": 1280, "W": 4}, packed=True)
    _check_npu(tk.conv.plan.launches(ctx), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rotary_tiles_fit(tk, dtype):
    for D, R in ((256, 64), (256, 256), (128, 128), (128, 64), (64, 32), (45, 20)):
        for T in LENGTHS:
            ctx = Context("apply_rotary_pos_emb", NPU, dtype, {"B": 1, "T": T, "H": 16, "HK": 2, "D": D, "R": R},
                          requires_grad=True)
            _check_npu(tk.rotary.plan.launches(ctx), dtype)
            _check_cuda(tk.rotary.plan.launches(Context("apply_rotary_pos_emb", CUDA, dtype, ctx.shapes, requires_grad=True)), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_recurrent_tiles_fit(tk, dtype):
    for K, V in ((128, 128), (256, 256), (64, 96)):
        for B in (1, 7, 256, 4096):
            for HV in (4, 32, 64):
                ctx = Context("chunk_gated_delta_rule", NPU, dtype, {"B": B, "T": 1, "H": 4, "HV": HV, "K": K, "V": V})
                _check_npu(tk.gdr.plan.launches(ctx), dtype)
                _check_cuda(tk.gdr.plan.launches(Context(ctx.op, CUDA, dtype, ctx.shapes)), dtype)


def test_tile_config_is_pure_and_prefers_double_buffering(tk):
    a = tk.conv.plan.tile_config(NPU, 4096, 1280, 4, torch.bfloat16)
    assert a == tk.conv.plan.tile_config(NPU, 4096, 1280, 4, torch.bfloat16)
    # a smaller UB gives smaller tiles, still fitting
    small = NPU.replace(ub_bytes=48 * 1024)
    b = tk.conv.plan.tile_config(small, 4096, 1280, 4, torch.float32, backward=True)
    assert b["BT"] * b["BD"] <= a["BT"] * a["BD"]
    assert ub.estimate("ours.causal_conv1d_bwd", arch=small, dtype="fp32", **b).fits


def test_the_tile_plans_import_no_triton():
    """The plans (and the registrations, which import them) are pure: they choose without triton installed."""
    script = ("import sys; sys.modules['triton'] = None\n"
              "import sp_kernels\n"
              "from sp_kernels.dispatch import Context, resolve_profile\n"
              f"for package in {sorted(OPS.values())!r}:\n"
              "    __import__(package + '.triton_plan')\n"
              "from sp_kernels.kernels.causal_conv1d.triton_plan import launches\n"
              "ctx = Context('causal_conv1d', resolve_profile('npu:Ascend910B3'), shapes=dict(T=64, D=256, W=4))\n"
              "print(launches(ctx)[0].kernel)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert run.returncode == 0 and run.stdout.split() == ["ours.causal_conv1d_fwd"], run.stderr[-3000:]


class _Recorder:
    """Stands in for a ``@triton.jit`` kernel: records each launch's grid and constexprs."""

    def __init__(self, calls, name):
        self.calls, self.name = calls, name

    def __getitem__(self, grid):
        return lambda *args, **constexprs: self.calls.append((self.name, grid[0], constexprs))


@pytest.mark.parametrize("spec", ["npu:Ascend910B3", "cuda:sm90"])
def test_the_launchers_run_the_launches_the_plan_returns(tk, monkeypatch, spec):
    """What the registry checked (``launches(ctx)`` of the call's context) is what the launcher launches: its
    kernel, tile and grid."""
    profile = resolve_profile(spec)
    calls = []
    for op in (tk.conv, tk.rotary, tk.gdr):
        monkeypatch.setattr(op.launch, "detect", lambda device: profile)
        for name in dir(op.kernels):
            if name.endswith("_kernel"):
                monkeypatch.setattr(op.launch, name, _Recorder(calls, name))

    def launched(kernels):
        got = [(kernels[name], grid, c) for name, grid, c in calls]
        calls.clear()
        return got

    def check(launches, got):
        assert [(l.kernel, l.grid) for l in launches] == [(k, g) for k, g, _ in got]
        for launch, (_, _, constexprs) in zip(launches, got):
            assert {k: constexprs[k] for k in launch.tile} == dict(launch.tile), launch.describe()

    B, T, D, W = 2, 300, 1280, 4
    x = torch.randn(B, T, D, requires_grad=True)
    y, _ = tk.conv.launch.causal_conv1d_triton(x, torch.randn(D, W), None, "silu")
    y.sum().backward()
    ctx = Context("causal_conv1d", profile, torch.float32, {"B": B, "T": T, "D": D, "W": W}, requires_grad=True)
    check(tk.conv.plan.launches(ctx), launched({"causal_conv1d_fwd_kernel": tk.conv.plan.FWD,
                                                "causal_conv1d_bwd_kernel": tk.conv.plan.BWD}))

    B, H, HK, T, D, R = 1, 16, 2, 64, 256, 64
    q, k = torch.randn(B, H, T, D, requires_grad=True), torch.randn(B, HK, T, D)
    oq, _ = tk.rotary.launch.rotary_triton(q, k, torch.randn(1, T, R), torch.randn(1, T, R))
    oq.sum().backward()
    ctx = Context("apply_rotary_pos_emb", profile, torch.float32, {"B": B, "T": T, "H": H, "HK": HK, "D": D, "R": R},
                  requires_grad=True)
    check(tk.rotary.plan.launches(ctx), launched({"rotary_fwd_kernel": tk.rotary.plan.FWD,
                                                  "rotary_bwd_kernel": tk.rotary.plan.BWD}))

    B, T, H, HV, K, V = 8, 1, 16, 32, 128, 128
    tk.gdr.launch.fused_recurrent_gated_delta_rule_triton(
        torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, HV, V), -torch.rand(B, T, HV),
        torch.rand(B, T, HV), K**-0.5)
    ctx = Context("chunk_gated_delta_rule", profile, torch.float32, {"B": B, "T": T, "H": H, "HV": HV, "K": K, "V": V})
    check(tk.gdr.plan.launches(ctx), launched({"fused_recurrent_gdr_fwd_kernel": tk.gdr.plan.KERNEL}))


def test_compile_specs_cover_every_argument(tk):
    for op in (tk.conv, tk.rotary, tk.gdr):
        specs = op.specs.compile_specs()
        # one spec per (device type, configuration): the note names the profile that chose it
        assert specs and len({(s.note.split(':')[0], s.key) for s in specs}) == len(specs)
        for spec in specs:
            assert spec.module == op.kernels.__name__
            kernel = getattr(op.kernels, spec.function)
            names = list(inspect.signature(kernel.fn).parameters)
            assert set(spec.signature) | set(spec.constexprs) == set(names), spec.key
            assert not set(spec.signature) & set(spec.constexprs)
            ub.estimate(spec.kernel, arch=NPU, dtype=spec.dtype, **spec.tile)  # the tile names the model's params
        kinds = {(s.kernel, s.dtype) for s in specs}
        assert {d for _, d in kinds} == {"bf16", "fp16", "fp32"}


def test_registry_choices(monkeypatch):
    # the choice logic, whatever this machine's triton has: an NPU context needs triton-ascend's backend, which the
    # main venv (upstream triton) lacks
    monkeypatch.setattr("sp_kernels._triton.triton_usable", lambda device_type: (True, ""))
    npu_conv = Context("causal_conv1d", NPU, torch.bfloat16, {"B": 1, "T": 4096, "D": 1280, "W": 4},
                       requires_grad=True)
    assert select("causal_conv1d", npu_conv).chosen.name == "triton"
    rot = Context("apply_rotary_pos_emb", CUDA, torch.bfloat16, {"B": 1, "T": 4096, "H": 16, "HK": 2, "D": 256, "R": 64})
    assert select("apply_rotary_pos_emb", rot).chosen.name == "triton"
    shapes = {"B": 4, "T": 1, "H": 16, "HV": 32, "K": 128, "V": 128}
    decode = Context("chunk_gated_delta_rule", NPU, torch.bfloat16, shapes)
    assert select("chunk_gated_delta_rule", decode).chosen.name == "triton"
    train = Context("chunk_gated_delta_rule", NPU, torch.bfloat16, shapes, requires_grad=True)
    sel = select("chunk_gated_delta_rule", train)
    assert sel.chosen.name == "torch_recurrent" and "forward only" in dict(sel.rejected)["triton"]  # T=1
    long = Context("chunk_gated_delta_rule", CUDA, torch.bfloat16, {**shapes, "T": 4096})
    assert "use the chunked form" in dict(select("chunk_gated_delta_rule", long).rejected)["triton"]
    cpu = Context("causal_conv1d", resolve_profile("cpu"), torch.float32, {"B": 1, "T": 8, "D": 8, "W": 4})
    assert select("causal_conv1d", cpu).chosen.name == "torch"


# --- the custom ops (torch.compile's nodes) running our Triton kernels ------------------------------------------

@pytest.mark.parametrize("op,packed", [("causal_conv1d", False), ("causal_conv1d", True), ("apply_rotary_pos_emb", False),
                                       ("chunk_gated_delta_rule", False), ("chunk_gated_delta_rule", True)])
@interpreted
def test_opcheck_of_the_custom_op_running_triton(op, packed):
    from sp_kernels._library import LIBRARY
    from tests.ops.test_library import cases

    args = cases(op, packed, torch.Generator().manual_seed(0))
    args = tuple(a.detach().float().requires_grad_(a.requires_grad)
                 if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
    torch.library.opcheck(LIBRARY[op].default, (*args, "triton"), atol=1e-4, rtol=1e-4)
