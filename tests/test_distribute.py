"""One trial function on every backend: identical tables; Ray stays inside one module."""

import ast
import logging
import re
from pathlib import Path

import polars as pl
import pytest
from helpers import mini_config
from polars.testing import assert_frame_equal

from covpipe import data, evaluate, specs, train
from covpipe.config import validate_config
from covpipe.distribute import TrialsFailed, resolve_backend, run_trials

PACKAGE = Path(__file__).parents[1] / "covpipe"


def test_only_distribute_imports_ray():
    importers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n == "ray" or n.startswith("ray.") for n in names):
                importers.add(path.name)
    assert importers == {"distribute.py"}


def _boom(x):
    if x == 1:
        raise ArithmeticError("trial one is bad")
    return x


def test_a_failing_trial_is_reported_after_its_siblings_ran():
    with pytest.raises(TrialsFailed, match=r"1 of 3 trials failed:\nt1: ArithmeticError: trial one is bad"):
        run_trials(_boom, [(0,), (1,), (2,)], backend="serial", names=["t0", "t1", "t2"])


def test_auto_backend_uses_ray_only_where_it_pays():
    assert resolve_backend("auto", 1, 8) == "serial"
    assert resolve_backend("auto", 4, 1) == "serial"
    assert resolve_backend("auto", 4, 8) == "ray"
    assert resolve_backend("auto", 1, 8, address="10.0.0.1:6379") == "ray"
    assert resolve_backend("serial", 4, 8) == "serial"


def test_auto_uses_the_runs_instance_only_when_the_run_started_one(tmp_path, monkeypatch):
    from covpipe import distribute

    state = tmp_path / "covpipe-ray.json"
    monkeypatch.setattr(distribute, "RUN_STATE", str(state))
    assert resolve_backend("auto", 1, 8, address="run") == "serial"  # a job run by hand: no Ray start-up
    state.write_text('{"pid": 0, "address": "127.0.0.1:1", "temp_dir": "", "workers": 2}')
    assert resolve_backend("auto", 1, 8, address="run") == "ray"
    assert resolve_backend("auto", 1, 1, address="run") == "serial"
    distribute.check_address("run")  # nothing to reach before the run starts it


def _stage_tables(tmp: Path, backend: str):
    cfg = validate_config(mini_config())
    study = cfg["studies"]["mini"]
    data.run(tmp / "train.parquet", tmp / "eval.parquet", specs.data_spec("mini", study, 4))
    out = {}
    for model in study["models"]:
        spec = specs.train_spec("mini", study, model, 4)
        train.run(
            tmp / "train.parquet", tmp / f"{model}.pt", tmp / f"{model}_log.parquet", spec, threads=2, backend=backend
        )
        espec = specs.evaluate_spec(spec, study["evaluate"])
        evaluate.run(
            tmp / "eval.parquet",
            tmp / f"{model}.pt",
            tmp / f"{model}_m.parquet",
            tmp / f"{model}_r.parquet",
            espec,
            threads=2,
            backend=backend,
        )
        out[model] = (
            pl.read_parquet(tmp / f"{model}_m.parquet"),
            pl.read_parquet(tmp / f"{model}_r.parquet"),
            pl.read_parquet(tmp / f"{model}_log.parquet").drop("seconds"),
        )
    return out


@pytest.mark.workflow  # starts Ray: four private instances
def test_serial_and_ray_give_identical_tables(tmp_path, caplog):
    (tmp_path / "s").mkdir(), (tmp_path / "r").mkdir()
    with caplog.at_level(logging.INFO, logger="covpipe.distribute"):
        serial = _stage_tables(tmp_path / "s", "serial")
        assert "ray:" not in caplog.text
        ray = _stage_tables(tmp_path / "r", "ray")
    # Ray really ran every stage: each train and evaluate job started a private instance and its
    # trials (one per seed) came back from Ray's workers, not from a silent serial fallback.
    ran = re.findall(r"ray: (\d+) trials ran on node\(s\) \w+", caplog.text)
    assert ran == ["2"] * 2 * len(serial), caplog.text[-2000:]
    for model in serial:
        for a, b in zip(serial[model], ray[model]):
            assert_frame_equal(a, b)  # exact: same seeds, one thread per trial on both
