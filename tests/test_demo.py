"""``python -m sp_kernels demo``: parity against transformers' own torch path, and no third-party warnings."""
import subprocess
import sys

import sp_kernels.demo as demo

# fla's and transformers' notes on transformers' fast paths (which kernelize replaces)
THIRD_PARTY_WARNINGS = ("Triton is not supported", "is falling back", "causal_conv1d` is not installed",
                        "UserWarning", "[transformers]")


def test_demo_compares_with_transformers_and_is_quiet():
    # as a user runs it: fla (installed here) visible, unlike in this test process
    run = subprocess.run([sys.executable, "-m", "sp_kernels", "demo"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    lines = run.stdout.splitlines()
    i = lines.index(f"  vs {demo.REFERENCE}:")
    assert "OK: tolerance 2e-03" in lines[i + 1], run.stdout
    assert "fails here" not in run.stdout and "FAIL" not in run.stdout
    for text in THIRD_PARTY_WARNINGS:
        assert text not in run.stdout + run.stderr, text


def test_demo_fails_when_transformers_disagrees(monkeypatch, capsys):
    run_transformers = demo._run_transformers_torch_path

    def perturbed(state_dict, batch, dev):  # transformers' model on other weights
        name = next(k for k in state_dict if k.endswith("linear_attn.A_log"))
        return run_transformers({**state_dict, name: state_dict[name] + 0.5}, batch, dev)

    monkeypatch.setattr(demo, "_run_transformers_torch_path", perturbed)
    assert demo.main() == 1
    out = capsys.readouterr().out
    assert f"vs {demo.REFERENCE}" in out and "FAIL: tolerance 2e-03" in out
