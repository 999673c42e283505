"""The registry: selection by device, priorities, packages, overrides, and the reasons it gives."""
import pytest
import torch

import sp_kernels  # noqa: F401  (registers the built-in implementations)
from sp_kernels.dispatch import (FORCE_ENV, OPS, Context, Implementation, declare, forced_from_env, implementations,
                                 known_profiles, prefer, preference, registered, resolve_profile, select)
from sp_kernels.dispatch.devices import npu_profile_for
from tests.helpers import only_portable


def ctx(op="causal_conv1d", device="cpu", **kw):
    return Context(op, resolve_profile(device), torch.float32, {"B": 1, "T": 64, "D": 32, "W": 4}, **kw)


def test_cpu_gets_the_portable_torch_implementation_and_reasons_for_the_rest():
    sel = select("causal_conv1d", ctx())
    assert sel.chosen.name == "torch"
    assert dict(sel.rejected)["reference"].startswith("reference implementation")


def test_selection_is_by_device_and_priority_and_reports_each_rejection():
    fast_npu = Implementation("causal_conv1d", "npu_fast", fn=lambda *a, **k: None, device_types=("npu",),
                              priority=50, supports=lambda c: (c.shapes["D"] <= 16, f"D={c.shapes['D']} > 16"))
    needs_pkg = Implementation("causal_conv1d", "needs_pkg", fn=lambda *a, **k: None, device_types=("cpu", "npu"),
                               priority=90, packages=("surely_not_installed_pkg",))
    with only_portable(), registered(fast_npu, needs_pkg):
        on_cpu = select("causal_conv1d", ctx())
        assert on_cpu.chosen.name == "torch"
        assert dict(on_cpu.rejected)["npu_fast"] == "runs on npu, not cpu"
        assert "surely_not_installed_pkg" in dict(on_cpu.rejected)["needs_pkg"]
        on_npu = select("causal_conv1d", ctx(device="npu:Ascend910B3"))
        assert on_npu.chosen.name == "torch" and dict(on_npu.rejected)["npu_fast"] == "D=32 > 16"
        small = Context("causal_conv1d", resolve_profile("npu:Ascend910B3"), torch.float32, {"D": 16, "W": 4})
        chosen = select("causal_conv1d", small)
        assert chosen.chosen.name == "npu_fast"
        assert dict(chosen.rejected)["torch"] == "fits, but npu_fast comes first"
        assert "npu_fast" in chosen.explain() and "rejected torch" in chosen.explain()
    assert "npu_fast" not in implementations("causal_conv1d")  # registered() cleans up


def test_force_by_keyword_and_environment(monkeypatch):
    assert select("causal_conv1d", ctx(), force="reference").chosen.name == "reference"
    monkeypatch.setenv(FORCE_ENV, "causal_conv1d=reference, apply_rotary_pos_emb=torch")
    assert forced_from_env() == {"causal_conv1d": "reference", "apply_rotary_pos_emb": "torch"}
    assert select("causal_conv1d", ctx()).chosen.name == "reference"
    assert select("causal_conv1d", ctx(), force="torch").chosen.name == "torch"  # the keyword wins


@pytest.mark.parametrize("value,match", [
    ("causal_conv1d", "expected 'op=implementation'"),
    ("conv=torch", "unknown op 'conv'"),
    ("causal_conv1d=", "expected 'op=implementation'"),
])
def test_bad_environment_override(monkeypatch, value, match):
    monkeypatch.setenv(FORCE_ENV, value)
    with pytest.raises(ValueError, match=f"{FORCE_ENV}: .*{match}"):
        select("causal_conv1d", ctx())


def test_forcing_unknown_or_unavailable_implementation_says_why():
    with pytest.raises(ValueError, match="impl: causal_conv1d has no implementation 'cuda_fast'; known: fla, reference, torch"):
        select("causal_conv1d", ctx(), force="cuda_fast")
    gpu_only = Implementation("causal_conv1d", "gpu_only", fn=print, device_types=("cuda",))
    with registered(gpu_only):
        with pytest.raises(ValueError, match="impl: .*'gpu_only' was forced but cannot run here: runs on cuda"):
            select("causal_conv1d", ctx(), force="gpu_only")


def test_no_fitting_implementation_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no implementation of causal_conv1d can run"):
        select("causal_conv1d", Context("causal_conv1d", resolve_profile("cpu").replace(type="xpu")))


def test_register_rejects_duplicates_and_unknown_ops():
    from sp_kernels.dispatch import register

    with pytest.raises(ValueError, match="name: causal_conv1d already has an implementation named 'torch'"):
        register(Implementation("causal_conv1d", "torch", fn=print, device_types=("cpu",)))
    with pytest.raises(ValueError, match="op: unknown op 'conv'"):
        Implementation("conv", "x", fn=print, device_types=("cpu",))
    with pytest.raises(TypeError, match="device_types: expected a tuple"):
        Implementation("causal_conv1d", "x", fn=print, device_types="cpu")


def test_device_profiles():
    p = resolve_profile("npu:Ascend910B3")
    assert (p.type, p.ub_bytes, p.vector_cores, p.max_grid, p.simulated) == ("npu", 196608, 40, 65535, True)
    assert resolve_profile("cuda:sm90").shared_memory_bytes == 227 * 1024
    assert resolve_profile(None).type == "cpu" and resolve_profile(torch.device("cpu")).type == "cpu"
    assert npu_profile_for("Ascend910B2C").ub_bytes == 192 * 1024  # unknown 910B part: same UB
    assert "npu:Ascend910_9382" in known_profiles()
    with pytest.raises(ValueError, match="device: unknown npu profile 'Ascend1'"):
        resolve_profile("npu:Ascend1")
    with pytest.raises(ValueError, match="device: unknown device type 'tpu'"):
        resolve_profile("tpu")
    with pytest.raises(TypeError, match="device: expected a str"):
        resolve_profile(3)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="device: cuda requested but no CUDA device"):
            resolve_profile("cuda")


def test_implementations_mapping_is_printable():
    table = implementations()
    assert set(table) == {"chunk_gated_delta_rule", "causal_conv1d", "apply_rotary_pos_emb", "fusion_attention"}
    assert "Implementation(op='causal_conv1d', name='torch'" in repr(table["causal_conv1d"]["torch"])


def test_check_impl_name_reports_the_argument_it_is_given():
    from sp_kernels.dispatch.registry import check_impl_name

    assert check_impl_name("apply_rotary_pos_emb", "torch").name == "torch"
    with pytest.raises(TypeError, match="^force: expected an implementation name .str., got int"):
        check_impl_name("apply_rotary_pos_emb", 5, arg="force")
    with pytest.raises(ValueError, match="^force: apply_rotary_pos_emb has no implementation 'npu'; known: "):
        check_impl_name("apply_rotary_pos_emb", "npu", arg="force")
    with pytest.raises(ValueError, match="^op: unknown op 'conv'"):
        check_impl_name("conv", "torch")


def test_a_name_forced_by_the_environment_is_reported_as_such(monkeypatch):
    monkeypatch.setenv(FORCE_ENV, "causal_conv1d=cuda_fast")
    with pytest.raises(ValueError, match=f"^{FORCE_ENV}: causal_conv1d has no implementation 'cuda_fast'"):
        select("causal_conv1d", ctx())


NPU_NAMES = {"fusion_attention": "torch_npu.npu_fusion_attention", "apply_rotary_pos_emb": "torch_npu.npu_rotary_mul"}


def test_torch_npu_implementations_are_named_for_what_they_run(monkeypatch):
    """Dotted names work as ``impl`` and in ``SP_KERNELS_FORCE``: the name is found, and forcing it on the CPU says
    why it cannot run there (not that the name is unknown)."""
    for op, name in NPU_NAMES.items():
        assert implementations(op)[name].packages == ("torch_npu",) and "npu" not in implementations(op)
    monkeypatch.setenv(FORCE_ENV, ",".join(f"{op}={name}" for op, name in NPU_NAMES.items()))
    assert forced_from_env() == NPU_NAMES
    rotary = Context("apply_rotary_pos_emb", resolve_profile("cpu"), torch.float32, {"B": 1, "H": 2, "HK": 2, "D": 8, "R": 8})
    cannot = "apply_rotary_pos_emb implementation 'torch_npu.npu_rotary_mul' was forced but cannot run here: runs on npu, not cpu"
    with pytest.raises(ValueError, match=f"^{FORCE_ENV}: {cannot}"):
        select("apply_rotary_pos_emb", rotary)
    monkeypatch.delenv(FORCE_ENV)
    with pytest.raises(ValueError, match=f"^impl: {cannot}"):
        select("apply_rotary_pos_emb", rotary, force="torch_npu.npu_rotary_mul")
    assert dict(select("apply_rotary_pos_emb", rotary).rejected)["torch_npu.npu_rotary_mul"] == "runs on npu, not cpu"


def test_among_the_package_s_implementations_the_declared_order_decides():
    late = Implementation("causal_conv1d", "late", fn=lambda *a, **k: None, device_types=("cpu",))
    with only_portable(), registered(late):
        sel = select("causal_conv1d", ctx())
    assert sel.chosen.name == "torch" and dict(sel.rejected)["late"] == "fits, but torch comes first"
    assert "the first that fits of triton > fla > torch > reference" in sel.explain()


def test_dependencies_point_one_way():
    """dispatch knows no op package, sp/ knows no model: kernelize -> sp -> (torch), every op -> dispatch."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]

    def imported(folder):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    yield path.name, node.module
                elif isinstance(node, ast.Import):
                    yield from ((path.name, a.name) for a in node.names)

    assert not [(f, m) for f, m in imported("sp_kernels/sp") if m.startswith("sp_kernels.kernelize")]
    # dispatch imports sp_kernels only to re-register the implementations of an unpickled model
    assert [(f, m) for f, m in imported("sp_kernels/dispatch")
            if m.startswith("sp_kernels") and not m.startswith("sp_kernels.dispatch")] == [("registry.py", "sp_kernels")]


def test_the_order_names_only_registered_implementations_each_once():
    before = preference("causal_conv1d")
    with pytest.raises(ValueError, match=r"^names: causal_conv1d has no implementation 'trition'; registered: "):
        prefer("causal_conv1d", "trition", "torch")
    with pytest.raises(ValueError, match=r"^names: an implementation of causal_conv1d is named twice"):
        prefer("causal_conv1d", "torch", "torch")
    assert preference("causal_conv1d") == before


def test_an_op_declares_only_its_own_implementations():
    rotary = Implementation("apply_rotary_pos_emb", "stray", fn=print, device_types=("cpu",))
    with pytest.raises(ValueError, match=r"^impls: 'stray' is an implementation of apply_rotary_pos_emb, not of "
                                         r"causal_conv1d$"):
        declare("causal_conv1d", rotary)
    assert "stray" not in implementations("apply_rotary_pos_emb")


@pytest.mark.parametrize("op", OPS)
def test_an_op_s_declaration_names_its_reference_tests_and_benchmark(op):
    """The op's ``__init__`` declares every implementation the package registers for it, in the order, and names
    the files a reader looks for next."""
    import importlib
    from pathlib import Path

    package = importlib.import_module(f"sp_kernels.kernels.{op}")
    root = Path(__file__).resolve().parents[2]
    assert set(preference(op)) == set(implementations(op)) and "reference" in preference(op)
    for path in (f"tests/ops/test_{op}.py", f"bench/bench_{op}.py"):
        assert path in package.__doc__ and (root / path).is_file()
    assert (root / "sp_kernels" / "kernels" / op / "naive.py").is_file() and "naive.py" in package.__doc__


def test_the_documented_orders_are_the_declared_ones():
    """docs/dispatch.md's table of the orders of preference, against each op's declaration."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "dispatch.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| (`[^|]+`) \|$", text, flags=re.M))
    assert {op: tuple(re.findall(r"`([^`]+)`", rows.get(op, ""))) for op in OPS} == {op: preference(op) for op in OPS}
