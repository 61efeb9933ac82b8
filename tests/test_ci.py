"""The README's test command and .ci/run run the same checks (lint-imports, ruff, mypy, pytest)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_test_command_is_the_one_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text().split("keep the two in sync")[1].splitlines()[1]
    readme = (ROOT / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("apt-get update") and "pytest" in x)
    assert re.sub(r"pip install -q ", "pip install ", ci) in line
    for check in ("lint-imports", "ruff check .", "mypy", "xvfb-run -a python -m pytest -q"):
        assert check in ci
