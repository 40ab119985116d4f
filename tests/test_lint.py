"""Lint and format (issue 18, item 8): `ruff check` with the rules of pyproject.toml and `ruff
format --check` over the package, the tests, the benchmarks and the scripts. The Snakefile and
rule files have Snakemake's syntax: snakefmt checks them (tests/test_workflow.py)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PATHS = ["covpipe", "tests", "bench", "workflow/scripts", "scripts"]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_is_clean(command):
    proc = subprocess.run([sys.executable, "-m", "ruff", *command, *PATHS], cwd=ROOT, capture_output=True, text=True)
    fix = "ruff check --fix" if command == ["check"] else "ruff format"
    assert proc.returncode == 0, f"run `{fix} {' '.join(PATHS)}`:\n{proc.stdout[-4000:]}{proc.stderr[-2000:]}"
