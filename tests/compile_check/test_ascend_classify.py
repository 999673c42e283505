"""classify() of the Ascend harness on bishengir output captured from real compiles (triton-ascend 3.2.0 +
ascendnpu-ir 1.2.0 for Ascend910B3; fixtures/). Pure: runs in the main venv, no triton-ascend needed."""
from pathlib import Path

import pytest

from sp_kernels.compile_check.ascend import classify, error_message

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name, expected", [
    ("bishengir_fits.txt", ("fits", None)),
    ("bishengir_fits_single_buffered.txt", ("fits_single_buffered", None)),
    ("bishengir_overflow.txt", ("overflow", 1605632)),
])
def test_captured_outputs(name, expected):
    assert classify((FIXTURES / name).read_text()) == expected


def test_the_hivmc_version_probe_alone_means_nothing():
    probe = ("[ERROR] Cannot find hivmc under $PATH \n[ERROR] Failed to run `hivmc --version`.\n"
             "[WARNING] Failed to detect hivmc version for backward compatibility\n")
    status, bits = classify(probe + "bishengir-compile: Unknown command line argument '--enable-foo'.\n")
    assert (status, bits) == ("error", None)
    assert "Unknown command line argument" in error_message(probe + "bishengir-compile: Unknown command line "
                                                            "argument '--enable-foo'.\n")
    assert "hivmc" not in error_message(probe + "some frontend error\n")


def test_a_retry_without_code_motion_only_still_fits_double_buffered():
    text = ("[NOTE] Ub overflow detected; automatically set enable-code-motion to false and retrying compilation.\n"
            "[NOTE] Due to Ub overflow, automatically set enable-code-motion to false; compilation then succeeded.\n"
            'loc("k.mlir":1:1): error: External hivmc run fails, returning module before running external compiler')
    assert classify(text) == ("fits", None)


def test_a_compile_that_went_through_fits():
    assert classify("") == ("fits", None)
