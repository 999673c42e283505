"""How a GatedDeltaNet layer runs under SP (Ulysses or context parallelism): the rule kernelize and explain share,
its measured table, the bytes it reports, and the marker rule (no process group needed: all of it is decided before
kernelize forms one)."""
import json
from pathlib import Path

import pytest

import sp_kernels
from sp_kernels import _contexts
from sp_kernels.dispatch import registered
from sp_kernels.explain import ModelShape, explain, render
from tests.helpers import device_standins_on_cpu
from tests.kernelize.models import build
from tests.kernelize.test_kernelize import counting_standins

ROOT = Path(__file__).resolve().parents[2]


def _faster_at_longest(device_type, sp_size):
    cases = [c for c in _contexts._measured()[device_type]["cases"] if c["sp_size"] == sp_size]
    c = max(cases, key=lambda c: c["T"])
    return "context" if c["context_s"] < c["ulysses_s"] else "ulysses"


def test_heads_that_do_not_divide_run_by_context_parallelism():
    for sp_size in (2, 4, 8):
        mode, why = _contexts.gated_deltanet_sp(2, 6, sp_size) if sp_size != 2 else _contexts.gated_deltanet_sp(3, 6, 2)
        assert mode == "context" and "do not divide" in why


@pytest.mark.parametrize("sp_size", [2, 4])
def test_dividing_heads_take_the_mode_measured_faster_on_the_device(sp_size):
    mode, why = _contexts.gated_deltanet_sp(16, 48, sp_size, device_type="cpu")
    assert mode == _faster_at_longest("cpu", sp_size)
    assert "measured on cpu at T=" in why
    mode, why = _contexts.gated_deltanet_sp(16, 48, sp_size, device_type="cuda")  # nothing measured there
    assert mode == "ulysses" and "not measured on cuda" in why


def test_a_measurement_where_context_parallelism_is_faster_chooses_it(monkeypatch):
    table = {"cuda": {"source": "test", "cases": [
        dict(sp_size=4, T=4096, ulysses_s=1.0, context_s=1.2),  # shorter: not what decides
        dict(sp_size=4, T=32768, ulysses_s=3.0, context_s=2.0),
        dict(sp_size=2, T=32768, ulysses_s=2.0, context_s=3.0),
    ]}}
    monkeypatch.setattr(_contexts, "_measured", lambda: table)
    assert _contexts.gated_deltanet_sp(16, 48, 4, device_type="cuda")[0] == "context"
    assert _contexts.gated_deltanet_sp(16, 48, 2, device_type="cuda")[0] == "ulysses"
    assert _contexts.gated_deltanet_sp(16, 48, 8, device_type="cuda")[0] == "ulysses"  # sp 8 not measured
    assert _contexts.gated_deltanet_sp(16, 48, 4, "ulysses", device_type="cuda") == ("ulysses", "forced")
    assert _contexts.gated_deltanet_sp(16, 48, 4, device_type="cuda", kept="npu_gdr")[0] == "ulysses"


def test_a_kept_delta_rule_runs_by_ulysses_or_is_refused():
    mode, why = _contexts.gated_deltanet_sp(4, 8, 4, kept="mindspeed")
    assert mode == "ulysses" and "no context-parallel entry" in why
    with pytest.raises(ValueError, match=r"sp_size: the module keeps its delta rule 'mindspeed'.*\(2 key / 6 value\) "
                                         r"must divide by sp_size=4"):
        _contexts.gated_deltanet_sp(2, 6, 4, kept="mindspeed")
    with pytest.raises(ValueError, match="gated_deltanet_sp: the module keeps its delta rule 'mindspeed'"):
        _contexts.gated_deltanet_sp(4, 8, 4, "context", kept="mindspeed")


def test_kernelize_refuses_a_marked_module_whose_heads_do_not_divide():
    impls, _ = counting_standins(("npu",), prefix="npu")
    model = build("qwen3_5", linear_num_key_heads=2, linear_num_value_heads=6)
    with registered(*impls), device_standins_on_cpu():
        sp_kernels.kernelize(model, device="npu:Ascend910B3")
        with pytest.raises(ValueError, match="'npu_chunk_gated_delta_rule' .*no context-parallel entry"):
            sp_kernels.kernelize(model, sp_size=4, device="npu:Ascend910B3")
        with pytest.raises(ValueError, match="gated_deltanet_sp: the module keeps"):
            sp_kernels.kernelize(model, sp_size=2, device="npu:Ascend910B3", gated_deltanet_sp="context")


def test_explain_says_how_a_marked_module_runs():
    impls, _ = counting_standins(("npu",), prefix="npu")
    with registered(*impls):
        for heads, said in (((16, 48), "a marked module runs by Ulysses)."),
                            ((2, 6), "kernelize refuses this sp_size: the heads do not divide")):
            shape = ModelShape(num_k_heads=heads[0], num_v_heads=heads[1], num_heads=8, num_kv_heads=2)
            text = render(explain("npu:Ascend910B3", sp_size=4, shape=shape))
            assert "here npu_chunk_gated_delta_rule, an NPU kernel; it has no context-parallel entry" in text, text
            assert said in text, text


def test_the_bytes_explain_reports_are_the_ones_the_benchmark_counted():
    """Against the committed ``bench --op sp`` run (counted by wrapping the collectives, fp32). The count per layer
    also holds a few bytes of the loss' exchanges that follow the last layer (an int per rank)."""
    from bench.bench_sp import GDN_CONFIG

    data = json.loads((ROOT / "bench" / "results" / "sp.json").read_text())
    cases = [b["extra_info"]["sp_mode"] for b in data["benchmarks"] if "sp_mode" in b.get("extra_info", {})]
    assert cases
    for c in cases:
        assert 0 <= c["bytes_per_layer"] - _contexts.gated_deltanet_sp_bytes(
            mode=c["mode"], sp_size=c["sp_size"], B=1, T=c["T"], num_k_heads=GDN_CONFIG["linear_num_key_heads"],
            num_v_heads=GDN_CONFIG["linear_num_value_heads"], head_k_dim=GDN_CONFIG["linear_key_head_dim"],
            head_v_dim=GDN_CONFIG["linear_value_head_dim"], conv_kernel=4, itemsize=4) <= 8, c
