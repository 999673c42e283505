"""``python -m sp_kernels selftest``: on this CPU every selectable implementation runs and matches; a wrong stand-in
registered from outside makes it fail and is named; bad options are one line and exit code 2."""
import json
import subprocess
import sys

import pytest
import torch

from sp_kernels.dispatch import OPS, Implementation, implementations, registered
from sp_kernels import selftest
from sp_kernels.__main__ import main


def test_cpu_selftest_runs_every_selectable_cpu_implementation(tmp_path):
    path = tmp_path / "selftest.json"
    run = subprocess.run([sys.executable, "-m", "sp_kernels", "selftest", "--json", str(path)], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(path.read_text())
    assert report["verdict"] == "ok" and report["failures"] == []
    assert report["device"]["type"] == "cpu" and report["device"]["torch"] == torch.__version__
    rows = report["rows"]
    ran = {(r["op"], r["implementation"]) for r in rows if r["status"] == "ok"}
    # what the registry holds for the CPU, whatever it is (new implementations included): every one ran
    expected = {(op, name) for op, table in implementations().items() for name, impl in table.items()
                if name != "reference" and impl.selectable and "cpu" in impl.device_types}
    assert ran == expected
    # every registered implementation but the reference has a row; the others say why they did not run
    listed = {(r["op"], r["implementation"]) for r in rows}
    assert listed == {(op, name) for op, table in implementations().items() for name in table if name != "reference"}
    for r in rows:
        if r["status"] == "not run":
            assert r["detail"], r
            assert (r["op"], r["implementation"]) not in expected or "T=" in r["detail"]  # a length limit
        else:
            assert r["mode"] == "fwd+bwd" and r["bwd_error"] is not None and r["err_over_tol"] <= 1
            assert r["ms"] > 0 and r["vs_torch"] > 0
    for op in OPS:  # packed and one-token cases, in both dtypes, for every op that has them
        cases = {(r["case"], r["dtype"]) for r in rows if r["op"] == op and r["status"] == "ok"}
        assert {d for _, d in cases} == {"fp32", "bf16"}
        assert any(c.startswith("T1 ") or c.startswith("TQ1 ") for c, _ in cases)
        if op != "apply_rotary_pos_emb":  # rotary has no cu_seqlens
            assert any(c.startswith("packed") for c, _ in cases)
    out = run.stdout
    assert "max|err| fwd" in out and "vs torch" in out and "not run here:" in out
    assert "runs on cuda/npu, not cpu" in out
    assert f"OK in {report['seconds']:.1f} s" in out


def test_torch_path_is_the_portable_baseline():
    assert [selftest.torch_path(op) for op in OPS] == ["torch", "torch", "torch", "sdpa"]


def _conv_standins():
    torch_conv = implementations("causal_conv1d")["torch"].fn

    def wrong(*args, **kwargs):  # 10% off: beyond every dtype's tolerance
        y, state = torch_conv(*args, **kwargs)
        return y * 1.1, state

    def nan(*args, **kwargs):
        y, state = torch_conv(*args, **kwargs)
        return y * float("nan"), state

    def raises(*args, **kwargs):
        raise RuntimeError("kernel launch failed\nsecond line")

    def short_only(ctx):
        return ctx.shapes["T"] <= 16, f"T={ctx.shapes['T']} > 16 (test)"

    def no_grad(ctx):
        return not ctx.requires_grad, "no backward (test)"

    def broken_check(ctx):
        raise KeyError("S")

    cpu = ("cpu",)
    return (Implementation("causal_conv1d", "wrong_standin", fn=wrong, device_types=cpu, priority=50),
            Implementation("causal_conv1d", "nan_standin", fn=nan, device_types=cpu, priority=50),
            Implementation("causal_conv1d", "raising_standin", fn=raises, device_types=cpu, priority=50),
            Implementation("causal_conv1d", "fwd_standin", fn=torch_conv, device_types=cpu, supports=no_grad),
            Implementation("causal_conv1d", "short_standin", fn=torch_conv, device_types=cpu, supports=short_only),
            Implementation("causal_conv1d", "broken_check_standin", fn=torch_conv, device_types=cpu,
                           supports=broken_check))


def test_a_wrong_implementation_fails_the_selftest_and_is_named(tmp_path, capsys):
    path = tmp_path / "r.json"
    with registered(*_conv_standins()):
        code = main(["selftest", "--op", "causal_conv1d", "--json", str(path)])
    out = capsys.readouterr().out
    assert code == 1
    report = json.loads(path.read_text())
    assert report["verdict"] == "fail" and report["ops"] == ["causal_conv1d"]
    status = {}
    for r in report["rows"]:
        status.setdefault(r["implementation"], set()).add(r["status"])
    assert status["wrong_standin"] == status["nan_standin"] == {"mismatch"}
    assert status["raising_standin"] == status["broken_check_standin"] == {"error"}
    assert status["torch"] == status["fwd_standin"] == {"ok"}
    assert status["short_standin"] == {"ok", "not run"}
    failing = {f.split(" [")[0] for f in report["failures"]}
    assert failing == {"causal_conv1d/wrong_standin", "causal_conv1d/nan_standin", "causal_conv1d/raising_standin",
                       "causal_conv1d/broken_check_standin"}
    wrong = next(r for r in report["rows"] if r["implementation"] == "wrong_standin")
    assert wrong["err_over_tol"] > 1 and "y: max |err|" in wrong["detail"] and "dx: max |err|" in wrong["detail"]
    nan = next(r for r in report["rows"] if r["implementation"] == "nan_standin")
    assert nan["fwd_error"] == "inf" and nan["err_over_tol"] == "inf"
    fwd = [r for r in report["rows"] if r["implementation"] == "fwd_standin"]
    assert all(r["mode"] == "fwd" and r["bwd_error"] is None and r["vs_torch"] > 0 for r in fwd)
    # the table and the failures name them; the forward-only and the rejected ones say why
    assert "failures:" in out and "FAILED in" in out
    assert "causal_conv1d wrong_standin [T70 D96 bias state, fp32] mismatch: y: max |err| " in out
    assert "causal_conv1d nan_standin [T1 D64 state, fp32] mismatch: y: not finite (NaN or inf); dx: not" in out
    assert "causal_conv1d raising_standin [T1 D64 state, bf16] error: RuntimeError: kernel launch failed" in out
    assert "second line" not in out
    assert "broken_check_standin [T1 D64 state, fp32] error: its check raised KeyError: 'S'" in out
    assert "forward only:\n  causal_conv1d fwd_standin [all cases]: no backward (test)" in out
    assert "not run here:" in out and "triton [all cases]: runs on cuda/npu, not cpu" in out
    assert "short_standin [T70 D96 bias state fp32, T70 D96 bias state bf16]: T=70 > 16 (test)" in out
    # without the stand-ins, the same run passes
    assert main(["selftest", "--op", "causal_conv1d"]) == 0
    assert "wrong_standin" not in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--op", "bogus"], "python -m sp_kernels selftest: error: argument --op: invalid choice: 'bogus'"),
    (["--device", "tpu"], "error: device: unknown device type 'tpu'"),
    (["--device", "cuda:sm90"], "error: device: 'cuda:sm90' is a simulated profile (for explain); the self-test "),
    (["--json", "/nonexistent-dir/r.json"], "error: json: cannot write '/nonexistent-dir/r.json'"),
    (["--seed", "x"], "python -m sp_kernels selftest: error: argument --seed: invalid int value: 'x'"),
    (["--bogus"], "python -m sp_kernels: error: unrecognized arguments: --bogus"),
])
def test_bad_options_are_one_line_and_exit_code_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        sys.exit(main(["selftest", *argv]))
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1 and captured.err.startswith(message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_an_absent_device_is_one_line_in_a_real_process():
    run = subprocess.run([sys.executable, "-m", "sp_kernels", "selftest", "--device", "cuda"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines() == ["error: device: cuda requested but no CUDA device is available; use a "
                                       "simulated profile such as 'cuda:sm90' to explain selections"]
