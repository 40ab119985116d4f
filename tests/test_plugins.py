"""Teachers and model classes from another installed package (issue 18, item 6): the example
plugin in tests/plugin_example is installed into a folder of its own (never into the shared
environment) that the commands below find on PYTHONPATH."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from workflow_helpers import mini_config_writer, snakemake

HERE = Path(__file__).parent
CONFIG = {
    "execution": {"backend": "serial"},
    "studies": {
        "plug": {
            "teacher": {"name": "iid", "vocab_size": 3, "alpha": 1.0},
            "horizons": [2],
            "seeds": 1,
            "data": {"n_train": 32, "n_eval": 16},
            "models": {"uni": {"class": "unigram", "smoothing": 1.0}, "ng": {"class": "ngram"}},
            "train": {"steps": 4, "batch_size": 8, "checkpoints": [4]},
            "evaluate": {"levels": [2, 16], "stopped_kl_levels": [16]},
        }
    },
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder holding the installed example plugin (pip, offline, no build isolation)."""
    source = tmp_path_factory.mktemp("source") / "plugin_example"
    shutil.copytree(HERE / "plugin_example", source)  # the build writes next to its sources
    target = tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet"]
    subprocess.run([*pip, "--target", str(target), str(source)], check=True, capture_output=True, timeout=300)
    return target


def _check(config: Path, *paths) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, paths), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "covpipe.cli", "check", str(config)], capture_output=True, text=True, env=env
    )


def _config(tmp_path) -> Path:
    path = tmp_path / "plug.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def test_covpipe_check_accepts_the_plugins_teacher_and_model(site, tmp_path):
    proc = _check(_config(tmp_path), site)
    assert proc.returncode == 0 and "ok (1 studies)" in proc.stdout, proc.stderr[-2000:]


def test_without_the_plugin_its_names_are_unknown(tmp_path):
    proc = _check(_config(tmp_path))
    assert proc.returncode == 2 and "studies.plug.teacher.name: unknown teacher 'iid'; known: ar_linear" in proc.stderr


def test_a_plugins_entry_is_checked_like_a_built_in(site, tmp_path):
    bad = yaml.safe_load(yaml.safe_dump(CONFIG))
    bad["studies"]["plug"]["models"]["uni"]["order"] = 2
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = _check(path, site)
    assert proc.returncode == 2 and "studies.plug.models.uni.order: Input should be 0, got 2" in proc.stderr


def _fake_plugin(root: Path, dist: str, entry: str) -> Path:
    """A distribution that declares one entry point (what pip would leave behind), no code."""
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[covpipe.teachers]\n{entry}\n")
    return root


BROKEN = [
    (
        "markov = covpipe_plugin_example:IID",
        "covpipe: covpipe plugin 'clash' (covpipe.teachers entry point 'markov = covpipe_plugin_example:IID'): "
        "'markov' is a built-in teacher; register it under another name",
    ),
    (
        "gone = no_such_module:Teacher",
        "covpipe: covpipe plugin 'clash' (covpipe.teachers entry point 'gone = no_such_module:Teacher'): failed to "
        "load: ModuleNotFoundError: No module named 'no_such_module'",
    ),
    (
        "other = covpipe_plugin_example:IID",
        "covpipe: covpipe plugin 'clash' (covpipe.teachers entry point 'other = covpipe_plugin_example:IID'): "
        "IID.Params needs the field name: Literal['other'] (the name it is registered under)",
    ),
]


@pytest.mark.parametrize("entry,message", BROKEN, ids=["clash", "missing module", "misnamed"])
def test_a_plugin_that_cannot_be_used_gets_one_line_naming_it(site, tmp_path, entry, message):
    proc = _check(_config(tmp_path), _fake_plugin(tmp_path / "fake", "clash", entry), site)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and lines == [message], proc.stderr[-2000:]


@pytest.mark.workflow
def test_a_miniature_workflow_runs_the_plugins_teacher_and_model(site, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    mini_config_writer(tmp_path, CONFIG)
    snakemake(tmp_path)
    metrics = pl.read_parquet(tmp_path / "results" / "plug" / "metrics.parquet")
    assert set(metrics["model"]) == {"uni", "ng"} and metrics["value"].is_nan().sum() == 0
    assert "Nothing to be done" in snakemake(tmp_path, "-n").stdout
    broken = _fake_plugin(tmp_path / "fake", "clash", "gone = no_such_module:Teacher")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(broken), os.environ["PYTHONPATH"]]))
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0 and "covpipe: covpipe plugin 'clash'" in proc.stderr and "Traceback" not in proc.stderr


CODES = (
    "import json, sys\n"
    "from covpipe import specs\n"
    "from covpipe.config import validate_config\n"
    "study = validate_config(json.loads(sys.argv[1]))['studies']['plug']\n"
    "print(*(specs.train_spec('plug', study, m, 2)['code'] for m in ('uni', 'ng')))"
)


def _codes(site: Path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", CODES, json.dumps(CONFIG)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout.split()


@pytest.mark.parametrize(
    "module,edit,changed",
    [
        ("__init__.py", "\n# a comment\n", []),
        ("__init__.py", "\nUNUSED = 1\n", ["uni", "ng"]),  # the teacher's module: every job of the study
        ("unigram.py", "\nUNUSED = 1\n", ["uni"]),  # the model's torch module: its own jobs only
    ],
    ids=["comment", "teacher module", "model module"],
)
def test_an_edit_in_a_plugins_entry_module_reruns_the_jobs_that_use_it(site, tmp_path, module, edit, changed):
    before = _codes(site)
    edited = tmp_path / "site"
    shutil.copytree(site, edited)
    path = edited / "covpipe_plugin_example" / module
    path.write_text(path.read_text() + edit)
    after = _codes(edited)
    assert [m for m, b, a in zip(("uni", "ng"), before, after) if a != b] == changed
