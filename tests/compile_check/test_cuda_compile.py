"""The CUDA compile harness: real triton compiles for sm_90 on this CPU (no GPU needed)."""
import importlib.util

import pytest

from sp_kernels.__main__ import main
from sp_kernels.compile_check.specs import CompileSpec

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")


def toy(block, dtype="fp16"):
    return CompileSpec("toy.matmul", "tests.compile_check.toy_kernels", "toy_matmul",
                       {"a": f"*{dtype}", "b": f"*{dtype}", "c": f"*{dtype}", "n": "i32"}, {"BLOCK": block}, dtype,
                       {"BT": block})


def test_compiles_for_sm90_and_reports_shared_memory_and_registers():
    from sp_kernels.compile_check.cuda import compile_spec

    small, large = compile_spec(toy(32)), compile_spec(toy(128))
    assert small.status == large.status == "fits", (small, large)
    assert 0 < small.shared_bytes < large.shared_bytes <= 227 * 1024
    assert small.registers and small.spill_bytes == 0
    tight = compile_spec(toy(128), shared_limit=small.shared_bytes)
    assert tight.status == "overflow"


def test_a_kernel_that_does_not_compile_is_an_error_result():
    from sp_kernels.compile_check.cuda import compile_spec

    bad = CompileSpec("toy.matmul", "tests.compile_check.toy_kernels", "toy_matmul", {"a": "*fp16"}, {"BLOCK": 32},
                      "fp16", {"BT": 32})
    with pytest.raises(ValueError, match="argument 'b' has neither a type nor a constexpr value"):
        compile_spec(bad)
    odd = compile_spec(toy(24))  # tl.arange needs a power of two
    assert odd.status == "error" and odd.message


def test_ub_command(capsys):
    assert main(["ub", "--list"]) == 0
    assert "fla.causal_conv1d_bwd_coregrid" in capsys.readouterr().out.split()
    assert main(["ub", "--kernel", "fla.causal_conv1d_fwd", "--arch", "Ascend910B3", "--dtype", "bf16",
                 "--BT", "16", "--BD", "8", "--W", "4"]) == 0
    assert capsys.readouterr().out.startswith("fits ")
    assert main(["ub", "--kernel", "fla.causal_conv1d_fwd", "--BT", "x"]) == 2
    assert "BT: expected an int" in capsys.readouterr().err


def test_kernel_spec_reads_the_arguments_from_the_kernel():
    from sp_kernels.compile_check.specs import jit_function, kernel_spec
    from tests.compile_check.toy_kernels import toy_matmul

    spec = kernel_spec("toy.matmul", toy_matmul, "bf16", {"BLOCK": 32}, {"BT": 32}, types={"n": "i32"})
    assert dict(spec.signature) == {"a": "*bf16", "b": "*bf16", "c": "*bf16", "n": "i32"}
    assert (spec.module, spec.function, dict(spec.constexprs)) == ("tests.compile_check.toy_kernels", "toy_matmul",
                                                                   {"BLOCK": 32})
    assert jit_function(spec) is toy_matmul
    with pytest.raises(ValueError, match=r"no value for the constexpr \['BLOCK'\]"):
        kernel_spec("toy.matmul", toy_matmul, "bf16", {}, {"BT": 32}, types={"n": "i32"})
    with pytest.raises(ValueError, match=r"no argument \['m'\]"):
        kernel_spec("toy.matmul", toy_matmul, "bf16", {"BLOCK": 32}, {"BT": 32}, types={"m": "i32"})
    with pytest.raises(ValueError, match=r"a value for the argument \(not a constexpr\) \['n'\]"):
        kernel_spec("toy.matmul", toy_matmul, "bf16", {"BLOCK": 32, "n": 4}, {"BT": 32}, types={})
