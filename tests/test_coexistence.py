"""huggingface's ``kernels`` installed beside us: ``sp_kernels`` still imports ours, and says what happened."""
import os
import subprocess
import sys
from pathlib import Path

import kernels
import sp_kernels
from dispatch import foreign_kernels

ROOT = Path(__file__).resolve().parents[1]
# what matters of huggingface's package here: the import name, and a kernelize of its own
FOREIGN = 'def kernelize(model, **kwargs):\n    raise RuntimeError("the other package")\n__version__ = "0.17.2"\n'


def test_the_alias_is_the_package():
    assert foreign_kernels() is None
    assert kernels.kernelize is sp_kernels.kernelize and kernels.__all__ == sp_kernels.__all__


def run_beside_a_foreign_kernels(tmp_path, *args):
    (tmp_path / "site" / "kernels").mkdir(parents=True)
    (tmp_path / "site" / "kernels" / "__init__.py").write_text(FOREIGN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT)])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)


def test_sp_kernels_imports_and_names_the_foreign_kernels(tmp_path):
    script = ("import kernels, sp_kernels\n"
              "print(kernels.__file__)\n"
              "print(sp_kernels.kernelize.__module__)\n")
    run = run_beside_a_foreign_kernels(tmp_path, "-c", script)
    assert run.returncode == 0, run.stderr
    shadow, ours = run.stdout.split()
    assert shadow == str(tmp_path / "site" / "kernels" / "__init__.py")  # `import kernels` is theirs...
    assert ours == "sp_kernels.kernelize"  # ...and `import sp_kernels` is ours
    assert f"the import name `kernels` is another package here ({shadow}" in run.stderr
    assert "use `import sp_kernels`" in run.stderr


def test_the_command_line_runs_and_says_which_name_to_use(tmp_path):
    run = run_beside_a_foreign_kernels(tmp_path, "-m", "sp_kernels", "explain", "--device", "cpu")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("device: cpu")
    assert "`python -m sp_kernels` or `sp-kernels` for the command line" in run.stderr
