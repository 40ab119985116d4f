"""The bad-input catalogue: each bad input is refused before any job starts, with one line that
names the key or file, and nothing already computed changes. Bad configs run the real workflow
against a finished miniature study (marked workflow); bad files and diverging training are unit
tests on tables of their own."""

import math

import polars as pl
import pytest
import torch

from covpipe import io, train
from covpipe.config import ConfigError, load_config, validate_config
from covpipe.distribute import TrialsFailed

from helpers import mini_config
from workflow_helpers import mini_config_writer, snakemake, snapshot


def with_top(key, value):
    cfg = mini_config()
    cfg[key] = value
    return cfg


def renamed_studies():
    cfg = mini_config()
    cfg["studys"] = cfg.pop("studies")
    return cfg


def teacher(**changes):
    return {**mini_config()["studies"]["mini"]["teacher"], **changes}


CONFIG_CASES = [
    ("unknown top-level key", renamed_studies(), "studys: unknown top-level key; did you mean 'studies'?"),
    ("wrong type", mini_config(horizons="8"), "studies.mini.horizons: Input should be a valid list"),
    ("negative horizon", mini_config(horizons=[2, -4]), "studies.mini.horizons[1]: horizon must be >= 1, got -4"),
    ("zero horizon", mini_config(horizons=[0]), "studies.mini.horizons[0]: horizon must be >= 1, got 0"),
    ("empty horizons", mini_config(horizons=[]), "studies.mini.horizons: empty; list at least one horizon"),
    ("duplicate horizons", mini_config(horizons=[2, 2]), "studies.mini.horizons: duplicate horizons in [2, 2]"),
    ("unknown teacher", mini_config(teacher={"name": "markow"}),
     "studies.mini.teacher.name: unknown teacher 'markow'; known: ar_linear, graph, kl_lower_bound, markov, sgd_two_scales"),
    ("unknown model class", mini_config(models={"m": {"class": "gru2"}}),
     "studies.mini.models.m.class: unknown model class 'gru2'; known: ar_linear, consistent_branch, gru, ngram, table_per_position, transformer, valid_uniform"),
    ("unknown model key", mini_config(models={"m": {"class": "gru", "hiden": 4}}), "studies.mini.models.m.hiden: unknown key"),
    ("level below one", mini_config(evaluate={"levels": [0.5]}),
     "studies.mini.evaluate.levels: every level N must be >= 1, got 0.5"),
    ("negative class weight", mini_config(teacher=teacher(classes={"a": 1.5, "b": -0.5})),
     "studies.mini.teacher.classes: weight of class 'b' must be >= 0, got -0.5"),
    ("class weights not summing to one", mini_config(teacher=teacher(classes={"a": 0.5, "b": 0.2})),
     "studies.mini.teacher.classes: weights must sum to 1, got 0.7"),
    ("zero seeds", mini_config(seeds=0), "studies.mini.seeds: Input should be greater than or equal to 1"),
    ("checkpoint beyond training", mini_config(train={"steps": 10, "checkpoints": [5, 20]}),
     "studies.mini.train: checkpoints: step 20 is beyond the training length steps=10"),
    ("unsorted checkpoints", mini_config(train={"steps": 20, "checkpoints": [20, 5]}),
     "studies.mini.train: checkpoints: must be strictly increasing, got [20, 5]"),
    ("zero batch size", mini_config(train={"batch_size": 0}),
     "studies.mini.train.batch_size: Input should be greater than or equal to 1"),
    ("nan learning rate", mini_config(train={"lr": math.nan}), "studies.mini.train.lr: Input should be a finite number"),
    ("negative learning rate", mini_config(train={"lr": -0.1}), "studies.mini.train.lr: Input should be greater than 0"),
    ("model cannot fit teacher", mini_config(teacher={"name": "markov", "vocab_size": 64, "order": 0},
                                             models={"t": {"class": "table_per_position", "order": 4}}),
     "studies.mini.models.t.order: 4 needs 2.28e+09 table entries at horizon 2 (limit 5e+07); lower the order"),
    ("gpu where none exists", with_top("execution", {"device": "cuda"}),
     "execution.device: 'cuda' requested but torch sees no GPU on this machine; use 'cpu'"),
    ("unknown backend", with_top("execution", {"backend": "dask"}),
     "execution.backend: Input should be 'auto', 'serial' or 'ray'"),
]


@pytest.mark.workflow
@pytest.mark.parametrize("cfg,message", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_is_refused_before_any_job_and_nothing_changes(finished, cfg, message):
    if "cuda" in message and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    directory, _ = finished
    before = snapshot(directory)
    mini_config_writer(directory, cfg)
    try:
        proc = snakemake(directory, check=False)
    finally:
        mini_config_writer(directory, mini_config())
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "covpipe:" in line]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert lines[0].startswith("covpipe: invalid config: config/config.yaml: ")
    assert "Traceback" not in proc.stderr
    assert "Job stats" not in proc.stdout  # refused before planning, so no job ran
    assert snapshot(directory) == before


@pytest.mark.workflow
def test_results_directory_that_is_a_file_is_refused(tmp_path):
    mini_config_writer(tmp_path, mini_config())
    (tmp_path / "results").write_text("not a directory")
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    assert "covpipe: results: results directory is a file, not a directory" in proc.stderr


@pytest.mark.workflow
def test_missing_and_non_yaml_config_files_name_the_file(tmp_path):
    proc = snakemake(tmp_path, check=False)  # no config/config.yaml at all
    assert proc.returncode != 0 and "config/config.yaml" in proc.stderr
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("studies: {mini: [1, 2}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML: "):
        load_config(tmp_path / "bad.yaml")


def test_truncated_parquet_names_the_file_and_what_to_do(tmp_path):
    source = tmp_path / "whole.parquet"
    io.write_parquet(pl.DataFrame({"x": list(range(1000)), "y": [0.5] * 1000}), source)
    broken = tmp_path / "metrics.parquet"
    broken.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"metrics.parquet: not a readable Parquet table .*delete it and rerun its stage"):
        io.read_parquet(broken)
    with pytest.raises(FileNotFoundError, match=r"absent.parquet: missing; rerun the stage that writes it"):
        io.read_parquet(tmp_path / "absent.parquet")


def test_checkpoint_from_an_incompatible_version_is_refused(tmp_path):
    torch.save({"covpipe_format": 0, "trials": {}}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"old.pt: written by an incompatible covpipe version; delete it and rerun training"):
        io.load_torch(tmp_path / "old.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match=r"cut.pt: not a readable checkpoint file"):
        io.load_torch(tmp_path / "cut.pt")


def test_nan_loss_stops_its_trial_lets_siblings_finish_and_writes_no_table(tmp_path):
    cfg = validate_config(mini_config(train={"optimizer": "sgd", "lr": 1e37, "steps": 20, "checkpoints": [20]}))
    study = cfg["studies"]["mini"]
    spec = train.train_spec("mini", study, "gru", 4)
    assert spec["train"]["lr"] == 1e37  # the gru's own override keeps the study's optimizer and lr
    (tmp_path / "data").mkdir()
    data = tmp_path / "data" / "train.parquet"
    from covpipe import data as data_stage

    data_stage.run(data, tmp_path / "data" / "eval.parquet", data_stage.data_spec("mini", study, 4))
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    with pytest.raises(TrialsFailed, match=r"2 of 2 trials failed:\ngru H=4 seed 0: FloatingPointError: "
                                           r"gru horizon 4 seed 0: loss is (nan|inf) at step \d+"):
        train.run(data, tmp_path / "ck.pt", tmp_path / "log.parquet", spec)
    assert not (tmp_path / "ck.pt").exists() and not (tmp_path / "log.parquet").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary files left behind either
