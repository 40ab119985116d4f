"""Reruns follow the code (issue 18, item 9): every job's spec holds a fingerprint of the covpipe
modules its stage imports, so a comment-only edit reruns nothing and a code edit reruns exactly
the jobs whose code changed."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import mini_config
from workflow_helpers import mini_config_writer

from covpipe import fingerprint, specs
from covpipe.config import validate_config

ROOT = Path(__file__).parents[1]

CODE = '''"""A module."""

import math


def area(r):
    """Of a circle."""
    return math.pi * r * r  # pi r^2


class Shape:
    """A shape."""

    sides = 0
'''


@pytest.mark.parametrize(
    "same",
    [
        CODE.replace("# pi r^2", "# the area"),  # a comment
        CODE.replace('"""Of a circle."""', '"""Of a disc, in square units."""'),  # a docstring
        CODE.replace('"""A shape."""\n\n', ""),  # a docstring removed
        CODE.replace("return math.pi * r * r", "return (math.pi *\n            r * r)"),  # layout
        CODE + "\n\n# a trailing comment\n",
    ],
)
def test_comments_docstrings_and_layout_leave_the_hash_alone(same):
    assert fingerprint.source_hash(same) == fingerprint.source_hash(CODE)


@pytest.mark.parametrize(
    "other",
    [
        CODE.replace("r * r", "r ** 2"),  # the same number, other code
        CODE.replace("sides = 0", "sides = 1"),
        CODE.replace("import math", "import math\nimport os"),
        CODE.replace('"""Of a circle."""', '"""Of a circle."""\n    r = abs(r)'),
    ],
)
def test_a_code_change_changes_the_hash(other):
    assert fingerprint.source_hash(other) != fingerprint.source_hash(CODE)


def _stage_modules(stage: str) -> set[str]:
    unused = frozenset(fingerprint._entry_modules().values())  # no teacher, model or learner of a study
    return fingerprint.closure(fingerprint.STAGES[stage], unused)


def test_the_stage_that_imports_the_metrics_is_evaluation():
    assert {s for s in fingerprint.STAGES if "covpipe.metrics" in _stage_modules(s)} == {"evaluate"}


def test_imports_inside_functions_count_and_preloading_by_name_does_not():
    assert "covpipe.learners.fitting" in _stage_modules("train")  # imported inside train's functions
    assert "covpipe.evaluate" not in _stage_modules("train")  # Ray's warm workers preload it by name


def test_every_module_is_in_the_closure_of_some_stage():
    """A module no stage reaches would change no fingerprint: a stage would run code its spec
    does not cover (an import the reader misses)."""
    entries = fingerprint._entry_modules()
    reached = set().union(*(fingerprint.closure(m) for m in fingerprint.STAGES.values()))
    reached |= set().union(*(fingerprint.closure(m) for m in entries.values()))
    planning_only = {
        "covpipe",
        "covpipe.cli",
        "covpipe.config",
        "covpipe.config_errors",
        "covpipe.config_models",
        "covpipe.specs",
        "covpipe.fingerprint",
        "covpipe.limits",
        "covpipe.strict_yaml",
        "covpipe.reference",
        "covpipe.report",
    }
    assert set(fingerprint.modules()) - reached <= planning_only


def test_a_job_reads_the_code_of_its_own_teacher_model_and_learner_only():
    def spec(teacher, model):
        cfg = {
            "studies": {
                "s": {
                    "teacher": teacher,
                    "horizons": [4],
                    "seeds": 1,
                    "models": {"m": model},
                    "data": {"n_train": 8, "n_eval": 8},
                    "train": {"steps": 4, "checkpoints": [4]},
                }
            }
        }
        return specs.train_spec("s", validate_config(cfg)["studies"]["s"], "m", 4)

    markov = {"name": "markov", "vocab_size": 4}
    base = spec(markov, {"class": "gru"})
    assert spec(markov, {"class": "gru", "hidden": 8})["code"] == base["code"]  # settings are not code
    assert spec(markov, {"class": "transformer"})["code"] != base["code"]
    assert spec({"name": "ar_linear"}, {"class": "gru"})["code"] != base["code"]
    uses = {("teacher", "markov"), ("model", "gru")}
    modules = fingerprint.closure(
        "covpipe.train", frozenset(m for k, m in fingerprint._entry_modules().items() if k not in uses)
    )
    assert {"covpipe.models.gru", "covpipe.teachers.markov"} <= modules
    assert not {"covpipe.teachers.pivotal", "covpipe.models.transformer", "covpipe.learners.sgd"} & modules


# ---- the real workflow, on a copy of the code ------------------------------------------------------

# Plans with the copy's covpipe: the editable install's import hook would find the checkout's.
LAUNCH = """import sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path.insert(0, sys.argv.pop(1))
import covpipe
assert covpipe.__file__.startswith(sys.path[0]), covpipe.__file__
from snakemake.cli import main
main(sys.argv[1:])
"""


def _snakemake(code: Path, work: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", LAUNCH, str(code), "-s", str(code / "Snakefile"), "--directory", str(work), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return proc


def _plan(code: Path, work: Path) -> dict[str, int]:
    out = _snakemake(code, work, "--cores", "1", "-n").stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


@pytest.mark.workflow
def test_a_comment_reruns_nothing_and_a_metrics_change_reruns_evaluation_not_training(tmp_path):
    code, work = tmp_path / "code", tmp_path / "work"
    code.mkdir()
    shutil.copy(ROOT / "Snakefile", code / "Snakefile")
    shutil.copytree(ROOT / "workflow", code / "workflow")
    shutil.copytree(ROOT / "profiles", code / "profiles")
    shutil.copytree(ROOT / "covpipe", code / "covpipe", ignore=shutil.ignore_patterns("__pycache__"))
    mini_config_writer(work, mini_config())
    _snakemake(code, work, "--cores", "2")
    assert _plan(code, work) == {}

    metrics = code / "covpipe" / "metrics.py"
    source = metrics.read_text()
    metrics.write_text(source.replace('"""', '"""Edited: ', 1) + "\n# a comment at the end\n")
    assert _plan(code, work) == {}  # a docstring and a comment: no job reruns

    metrics.write_text(source + "\nUNUSED = 1\n")  # one line of code
    assert _plan(code, work) == {"evaluate": 4, "aggregate": 1, "plot": 4, "all": 1}


def test_the_parse_cache_gives_what_parsing_gives_and_survives_a_broken_file(tmp_path, monkeypatch):
    def fresh():
        for f in (fingerprint._cache, fingerprint._module, fingerprint.closure, fingerprint.of_job):
            f.cache_clear()

    want = fingerprint.of_job("train", frozenset({("teacher", "markov"), ("model", "gru")}))
    cache = tmp_path / "fingerprints.json"
    monkeypatch.setattr(fingerprint, "CACHE", cache)
    try:
        for text in (None, "{not json", '{"stamp": "other code", "modules": {}}'):
            if text is not None:
                cache.write_text(text)
            fresh()
            assert fingerprint.of_job("train", frozenset({("teacher", "markov"), ("model", "gru")})) == want
            assert json.loads(cache.read_text())["stamp"] == fingerprint._stamp()  # rewritten, valid
        fresh()  # now from the cache alone
        assert fingerprint.of_job("train", frozenset({("teacher", "markov"), ("model", "gru")})) == want
    finally:
        fresh()
