"""Print the lowest transformers version pyproject.toml declares (its test extra's ``transformers>=X``)."""
import re
import tomllib
from pathlib import Path

deps = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
test = deps["project"]["optional-dependencies"]["test"]
print(next(re.fullmatch(r"transformers\s*>=\s*([\d.]+)\s*,.*", d).group(1) for d in test if d.startswith("transformers")))
