"""One import name of our own, ``sp_kernels``: beside huggingface's ``kernels`` (a dependency of transformers since
5.25) nothing of ours shadows it or PyPI's ``dispatch``, installing and uninstalling ours touches none of their
files, and importing ours prints nothing."""
import importlib.metadata
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.helpers import is_checkout_file

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = "sp_kernels"


def python(*args, cwd, env=None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.mark.parametrize("name", ["kernels", "dispatch"])
def test_nothing_of_ours_is_importable_under_another_name_from_the_repo_root(name):
    # `python -c` puts the current directory first on sys.path, as `python -m` and pytest's `pythonpath = .` do
    run = python("-c", f"import importlib.util; s = importlib.util.find_spec({name!r}); print(s and s.origin)",
                 cwd=ROOT)
    assert run.returncode == 0, run.stderr
    origin = run.stdout.strip()
    assert origin == "None" or not is_checkout_file(origin, ROOT), origin


@pytest.mark.parametrize("where", ["repo", "elsewhere"])
def test_import_prints_nothing(where, tmp_path):
    code = "import sp_kernels\n"
    if importlib.util.find_spec("transformers") is not None:
        code += "from transformers import Qwen3_5ForCausalLM\n"  # imports huggingface's `kernels` on >= 5.25
    run = python("-W", "error", "-c", code, cwd=ROOT if where == "repo" else tmp_path)
    assert run.returncode == 0, run.stderr
    assert (run.stdout, run.stderr) == ("", "")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel pip builds from a copy of the sources (setuptools' in-tree ``build/`` would leak stale files)."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "setup.cfg", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / TOP_LEVEL, src / TOP_LEVEL, ignore=shutil.ignore_patterns("__pycache__"))
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(out), str(src)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    (path,) = out.glob("sp_kernels-*.whl")
    return path


def test_the_wheel_holds_one_top_level_package_and_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {TOP_LEVEL}
    for data in ("ub_models.json", "compile_table.json", "gated_deltanet_sp.json", "UB_MODELS.md"):
        assert f"sp_kernels/dispatch/data/{data}" in names
    assert not [n for n in names if n.startswith("sp_kernels/") and "/tests/" in n]


def test_the_wheel_shares_no_file_with_huggingface_kernels(wheel):
    try:
        theirs = {str(f) for f in importlib.metadata.files("kernels") or ()}
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("huggingface's kernels is not installed here")
    assert theirs and not theirs & set(zipfile.ZipFile(wheel).namelist())


def test_install_then_uninstall_beside_transformers_and_huggingface_kernels(wheel, tmp_path):
    """A regular install into a venv that sees this environment's packages (transformers, huggingface's ``kernels``
    when installed), then an uninstall: both leave transformers able to import a Qwen3.5 model."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = str(env_dir / "bin" / "python")
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages")]  # this environment's packages, as a plain path:
    Path(site, "outer.pth").write_text("\n".join(ours) + "\n")  # its .pth files (our editable install) stay out
    check = ("import importlib.util, sys\n"
             "from transformers import Qwen3_5ForCausalLM\n"
             "spec = importlib.util.find_spec('kernels')\n"
             "print(spec is not None and hasattr(__import__('kernels'), 'kernelize'))\n"
             "spec = importlib.util.find_spec('sp_kernels')\n"
             "print(spec.origin if spec else None)\n")
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def pip(*args):
        run = subprocess.run([sys.executable, "-m", "pip", "--python", py, *args], capture_output=True, text=True,
                             timeout=600, env=clean)
        assert run.returncode == 0, run.stderr

    def state():
        run = subprocess.run([py, "-W", "error", "-c", check], capture_output=True, text=True, cwd=tmp_path,
                             env=clean, timeout=300)
        assert run.returncode == 0, run.stderr
        return run.stdout.split()

    hub = importlib.util.find_spec("kernels") is not None
    pip("install", "--no-deps", "--no-index", "-q", str(wheel))
    has_hub, origin = state()
    assert has_hub == str(hub) and Path(origin).is_relative_to(site)  # ours from the wheel, theirs untouched
    pip("uninstall", "-y", "-q", "sp-kernels")
    assert state() == [str(hub), "None"] and not Path(site, TOP_LEVEL).exists()
