"""kernelize: binding, the NPU marker, idempotence, unkernelize, and bad input."""
import dataclasses

import pytest
import torch

import sp_kernels
from sp_kernels.dispatch import OPS, Implementation, implementations, registered
from sp_kernels import NPU_MARKER
from tests.helpers import device_standins_on_cpu, only_portable
from tests.kernelize.models import build



def counting_standins(device_types, priority=100, prefix="standin"):
    """Stand-ins that run the torch implementation and count their calls."""
    calls = {op: 0 for op in OPS}
    impls = []
    for op in OPS:
        torch_impl = max((i for i in implementations(op).values() if i.selectable and "cpu" in i.device_types),
                         key=lambda i: i.priority)

        def fn(*args, _op=op, _inner=torch_impl.fn, **kwargs):
            calls[_op] += 1
            return _inner(*args, **kwargs)

        impls.append(Implementation(op, f"{prefix}_{op}", fn=fn, device_types=device_types, priority=priority))
    return impls, calls


def test_chosen_implementations_are_the_ones_that_run():
    model = build("qwen3_5")
    impls, calls = counting_standins(("cpu",))
    ids = torch.randint(0, 96, (1, 12))
    with registered(*impls):
        report = sp_kernels.kernelize(model)
        model(input_ids=ids).logits.sum().backward()
    assert all(m.ops[op].startswith("standin") for m in report.modules for op in m.ops)
    assert calls == {op: 2 for op in OPS}  # two GatedDeltaNet and two attention layers


def test_npu_profile_marks_modules_patched_with_npu_kernels():
    model = build("qwen3_5")
    impls, calls = counting_standins(("npu",), prefix="npu")
    with registered(*impls), device_standins_on_cpu():
        report = sp_kernels.kernelize(model, device="npu:Ascend910B3")
        assert report.device.ub_bytes == 192 * 1024
        model(input_ids=torch.randint(0, 96, (1, 8)))
    assert calls["chunk_gated_delta_rule"] == 2 and calls["fusion_attention"] == 2
    for name, module in model.named_modules():
        if name.endswith(("linear_attn", "self_attn")):
            assert getattr(module, NPU_MARKER) is True
    assert all(m.npu_patched for m in report.modules)


def test_npu_profile_without_npu_kernels_leaves_no_marker():
    model = build("qwen3_5")
    report = sp_kernels.kernelize(model, device="npu:Ascend910B3")  # only portable torch implementations exist here
    assert not any(m.npu_patched for m in report.modules)
    assert not any(hasattr(m, NPU_MARKER) for m in model.modules())


def test_kernelize_is_idempotent_and_unkernelize_restores():
    model = build("qwen3_5")
    ids = torch.randint(0, 96, (2, 10))
    before = model(input_ids=ids).logits
    first = sp_kernels.kernelize(model)
    second = sp_kernels.kernelize(model)
    assert first == second
    hooks = [m for m in model.modules() if hasattr(m, "_sp_kernels_hook")]
    assert len(hooks) == 1 and len(hooks[0]._forward_pre_hooks) == 1
    kernelized = model(input_ids=ids).logits
    assert sp_kernels.unkernelize(model) == 4
    assert not any("forward" in vars(m) or hasattr(m, "_sp_kernels") for m in model.modules())
    assert not any(m._forward_pre_hooks for m in model.modules())
    torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=0, atol=0)
    torch.testing.assert_close(kernelized, before, rtol=2e-3, atol=2e-3)


def test_report_table_lists_every_module_and_op():
    report = sp_kernels.kernelize(build("qwen3_next", torch.float32))
    text = report.table()
    assert "model.layers.0.linear_attn" in text and "model.layers.1.self_attn" in text
    for op in OPS:
        assert op in text
    assert dataclasses.is_dataclass(report.modules[0])


def test_model_without_supported_modules_is_an_error():
    with pytest.raises(ValueError, match="model: .*no module kernelize supports"):
        sp_kernels.kernelize(torch.nn.Sequential(torch.nn.Linear(4, 4)))


def test_failed_selection_leaves_model_untouched():
    model = build("qwen3_5")
    with pytest.raises(ValueError, match="force: .*no implementation 'nope'"):
        sp_kernels.kernelize(model, force={"causal_conv1d": "nope"})
    assert not any(hasattr(m, "_sp_kernels") for m in model.modules())


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(sp_size=0), ValueError, "sp_size: expected >= 1"),
    (dict(sp_size=3), ValueError, "sp_size: num_attention_heads=4 is not divisible by sp_size=3"),
    (dict(sp_size=4), ValueError, "sp_size: 4 needs an initialized torch.distributed process group"),
    (dict(sp_size=2, gated_deltanet_sp="ring"), ValueError, "gated_deltanet_sp: expected one of"),
    (dict(gated_deltanet_sp="context"), ValueError, "gated_deltanet_sp: only with sp_size > 1"),
    (dict(sp_size=2.0), TypeError, "sp_size: expected an int"),
    (dict(sp_size=True), TypeError, "sp_size: expected an int"),
    (dict(mode="eval"), ValueError, "mode: expected one of"),
    (dict(device="npu:Ascend999"), ValueError, "device: unknown npu profile"),
    (dict(force={"conv": "torch"}), ValueError, "force: unknown op 'conv'"),
    (dict(force="reference"), TypeError, "force: expected a dict"),
    (dict(force={"apply_rotary_pos_emb": 5}), TypeError, "force: expected an implementation name"),
    (dict(force={"apply_rotary_pos_emb": "nope"}), ValueError, "force: apply_rotary_pos_emb has no implementation 'nope'"),
    (dict(group=object()), ValueError, "group: a process group was given with sp_size=1"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sp_kernels.kernelize(build("qwen3_5"), **kwargs)


def test_bad_model_type():
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        sp_kernels.kernelize("qwen3_5")


def test_sp_size_without_a_process_group_is_an_error():
    model = build("qwen3_5")
    with pytest.raises(ValueError, match="sp_size: 2 needs an initialized torch.distributed process group"):
        sp_kernels.kernelize(model, sp_size=2)
    assert not any(hasattr(m, "_sp_kernels") for m in model.modules())


def test_a_simulated_device_the_tensors_are_not_on_is_an_error_before_any_kernel_runs():
    model = build("qwen3_5", torch.float32)
    impls, calls = counting_standins(("cuda",), prefix="cuda")
    with registered(*impls):
        report = sp_kernels.kernelize(model, device="cuda:sm90")
        assert report.device.simulated and "cuda_causal_conv1d" in report.table()  # the report stays available
        with pytest.raises(RuntimeError, match=r"Qwen3_5GatedDeltaNet is kernelized for cuda:sm90 \(simulated\) "
                                               r".* but its input is on cpu"):
            model(input_ids=torch.randint(0, 96, (1, 8)))
    assert sum(calls.values()) == 0


def test_a_simulated_device_whose_kernels_are_portable_runs():
    model = build("qwen3_5")
    ids = torch.randint(0, 96, (1, 8))
    before = model(input_ids=ids).logits
    with only_portable():
        sp_kernels.kernelize(model, device="npu:Ascend910B3")  # torch implementations: they run CPU tensors too
    torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=2e-3, atol=2e-3)


def test_a_forced_implementation_that_cannot_run_names_force():
    with pytest.raises(ValueError, match="force: causal_conv1d implementation 'triton' was forced but cannot run"):
        sp_kernels.kernelize(build("qwen3_5"), force={"causal_conv1d": "triton"})
