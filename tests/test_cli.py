"""The command line: explain (real and simulated devices) and the demo."""
import subprocess
import sys

import pytest
import torch

from sp_kernels.dispatch import OPS
from sp_kernels.__main__ import main


def test_explain_simulated_npu_with_sp(capsys):
    assert main(["explain", "--device", "npu", "--arch", "Ascend910B3", "--sp-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "npu:Ascend910B3 (simulated), UB 192 KiB, 40 vector cores, grid <= 65535" in out
    assert "sp_size: 4" in out and "H=4 HV=12" in out  # 16 / 48 heads over 4 ranks
    for op in OPS:
        assert f"[{op}]" in out
    assert "rejected reference: reference implementation: used only when forced" in out


def test_explain_cuda_profile_and_bad_input(capsys):
    assert main(["explain", "--device", "cuda:sm90", "--dtype", "fp32", "--packed"]) == 0
    assert "cuda:sm90 (simulated), capability 9.0, shared memory 227 KiB/block" in capsys.readouterr().out
    assert main(["explain", "--sp-size", "5"]) == 2
    assert "sp_size: num_attention_heads=24 is not divisible by sp_size=5" in capsys.readouterr().err


def test_explain_sp_note_says_whether_a_triton_conv_overflowed():
    from sp_kernels.dispatch import Implementation, implementations, registered
    from sp_kernels.dispatch.ub import Launch
    from sp_kernels.explain import explain, render

    standin = Implementation("causal_conv1d", "triton_standin", fn=implementations("causal_conv1d")["torch"].fn,
                             device_types=("npu",), priority=50,
                             launches=lambda ctx: (Launch("fla.causal_conv1d_fwd", {"BT": 64, "BD": 4096, "W": 4},
                                                          40),))
    with registered(standin):
        text = render(explain("npu:Ascend910B3", sp_size=4))
    assert "here triton_standin overflow(s) (reason above), so torch runs." in text
    assert "triton_standin: " in text and "(ub overflow)" in text
    assert "here none overflows; torch is chosen" in render(explain("npu:Ascend910B3", sp_size=4))


def test_explain_shows_the_ub_driven_conv_choice_and_the_marker_rule(capsys):
    args = ["explain", "--device", "npu", "--arch", "Ascend910B3", "--sp-size", "4", "--dtype", "fp32"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "marker rule: a GatedDeltaNet module marked _twinkle_npu_patched keeps" in out
    # every Triton implementation's launches are shown with their Unified Buffer numbers, chosen or not
    assert "UB fla (rejected): fla.causal_conv1d_bwd_coregrid(BT=32, BD=64, W=4; grid 40): fits" in out
    assert "UB triton (" in out and "ours.causal_conv1d_bwd(" in out
    assert main(args + ["--ub-kib", "96"]) == 0
    small = capsys.readouterr().out
    assert "npu:Ascend910B3[UB 96 KiB]" in small
    chosen = next(line for line in small.splitlines() if line.startswith("causal_conv1d: "))
    assert chosen.split()[1] != "fla"  # fla's tiles do not fit 96 KiB (when fla is importable it is rejected for it)
    assert main(["explain", "--ub-kib", "96"]) == 2
    assert "ub_kib: only an NPU profile has a Unified Buffer" in capsys.readouterr().err


def test_sp_demo_runs_two_ranks():
    run = subprocess.run([sys.executable, "-m", "sp_kernels", "demo", "--sp-size", "2"], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "--- rank 1 of 2 ---" in run.stdout and "parity with sp_size=1 on every rank: OK" in run.stdout


def test_bench_quick_runs_and_renders(tmp_path):
    out = tmp_path / "quick.json"
    run = subprocess.run([sys.executable, "-m", "sp_kernels", "bench", "--quick", "--op", "apply_rotary_pos_emb", "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    table = (tmp_path / "quick.md").read_text()
    assert "### apply_rotary_pos_emb fp32 fwd+bwd" in table and "| transformers |" in table and "peak memory" in table
    assert (tmp_path / "quick.png").stat().st_size > 10_000


def test_decode_bench_quick_runs_and_renders(tmp_path):
    """The model-level decode benchmark's machinery (paired rounds, the our-ops-free bound restored after use, the
    table); its timings mean nothing in quick mode."""
    out = tmp_path / "decode.json"
    run = subprocess.run([sys.executable, "-m", "sp_kernels", "bench", "--quick", "--op", "decode", "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    table = (tmp_path / "decode.md").read_text()
    assert "### decoding: greedy generate with a cache" in table and "our ops free" in table
    assert "| 256 |" in table and "| yes |" in table


def _bad(capsys, *argv) -> str:
    """Run the command line on bad options: exit code 2 and exactly one line on stderr, which is returned."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own errors exit from parse_args
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv, message", [
    (["explain", "--sp-size", "0"], "error: sp_size: expected a positive int, got 0"),
    (["explain", "--sp-size", "-2"], "error: sp_size: expected a positive int, got -2"),
    (["explain", "--seq-len", "0"], "error: seq_len: expected a positive int, got 0"),
    (["explain", "--num-k-heads", "-1"], "error: num_k_heads: expected a positive int, got -1"),
    (["explain", "--device", "npu", "--ub-kib", "0"], "error: ub_kib: expected a positive int, got 0"),
    (["explain", "--device", "tpu"], "error: device: unknown device type 'tpu'"),
    (["explain", "--device", "npu:0"], "error: device: npu:0 requested but torch_npu is not importable"),
    (["explain", "--sp-size", "x"], "python -m sp_kernels explain: error: argument --sp-size: invalid int value: 'x'"),
    (["explain", "--bogus"], "python -m sp_kernels: error: unrecognized arguments: --bogus"),
    (["demo", "--sp-size", "0"], "error: sp_size: expected a positive int, got 0"),
    (["demo", "--device", "tpu"], "error: device: unknown device type 'tpu'"),
    (["demo", "--device", "cuda:sm90"], "error: device: 'cuda:sm90' is a simulated profile"),
    (["demo", "--sp-size", "2", "--device", "cuda"], "error: device: the sequence-parallel demo runs on CPU"),
    (["ub", "--kernel", "ours.rotary_fwd", "--BT", "x"], "error: BT: expected an int, got 'x'"),
    (["bench", "--op", "bogus"], "python -m sp_kernels bench: error: argument --op: invalid choice: 'bogus'"),
    (["compile-check", "--target", "tpu"], "python -m sp_kernels compile-check: error: argument --target: invalid"),
    ([], "python -m sp_kernels: error: the following arguments are required: command"),
])
def test_bad_options_are_one_line_and_exit_code_2(capsys, argv, message):
    assert _bad(capsys, *argv).startswith(message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_demo_on_an_absent_accelerator_is_an_error_before_running(capsys):
    assert _bad(capsys, "demo", "--device", "cuda").startswith("error: device: cuda requested but no CUDA device")


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "{demo,explain,ub,bench,compile-check,selftest}" in capsys.readouterr().out  # the usage line


def test_explain_names_the_torch_npu_implementations_for_what_they_run(capsys):
    assert main(["explain", "--device", "npu", "--arch", "Ascend910B3"]) == 0
    out = capsys.readouterr().out
    assert "torch_npu.npu_fusion_attention" in out and "torch_npu.npu_rotary_mul" in out
    assert "rejected npu:" not in out


def test_bad_option_in_a_real_process_is_one_line_without_traceback():
    run = subprocess.run([sys.executable, "-m", "sp_kernels", "explain", "--sp-size", "0"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 2
    assert run.stderr.splitlines() == ["error: sp_size: expected a positive int, got 0"]
    assert "Traceback" not in run.stderr and run.stdout == ""
