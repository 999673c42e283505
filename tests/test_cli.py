"""The command line: explain (real and simulated devices) and the demo."""
import subprocess
import sys

from kernels.__main__ import main


def test_explain_simulated_npu_with_sp(capsys):
    assert main(["explain", "--device", "npu", "--arch", "Ascend910B3", "--sp-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "npu:Ascend910B3 (simulated), UB 192 KiB, 40 vector cores, grid <= 65535" in out
    assert "sp_size: 4" in out and "H=4 HV=12" in out  # 16 / 48 heads over 4 ranks
    for op in ("causal_conv1d", "chunk_gated_delta_rule", "rotary", "fusion_attention"):
        assert f"[{op}]" in out
    assert "rejected reference: reference implementation: used only when forced" in out


def test_explain_cuda_profile_and_bad_input(capsys):
    assert main(["explain", "--device", "cuda:sm90", "--dtype", "fp32", "--packed"]) == 0
    assert "cuda:sm90 (simulated), capability 9.0, shared memory 227 KiB/block" in capsys.readouterr().out
    assert main(["explain", "--sp-size", "5"]) == 2
    assert "sp_size: linear_num_key_heads=16 is not divisible by sp_size=5" in capsys.readouterr().err


def test_demo_runs_and_reports_parity():
    run = subprocess.run([sys.executable, "-m", "kernels", "demo"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "model.layers.0.linear_attn" in run.stdout
    assert "vs each sequence run alone" in run.stdout
