"""The bad-input catalogue: each bad input is refused before any job starts, with one line that
names the key or file, and nothing already computed changes. Bad configs run the real workflow
against a finished miniature study (marked workflow); bad files and diverging training are unit
tests on tables of their own."""

import math

import polars as pl
import pytest
import torch
from helpers import mini_config
from workflow_helpers import mini_config_writer, snakemake, snapshot

from covpipe import io, specs, train
from covpipe.config import ConfigError, load_config, validate_config
from covpipe.distribute import TrialsFailed
from covpipe.teachers import TEACHERS


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
    (
        "unknown teacher",
        mini_config(teacher={"name": "markow"}),
        "studies.mini.teacher.name: unknown teacher 'markow'; known: " + ", ".join(sorted(TEACHERS)),
    ),
    (
        "unknown model class",
        mini_config(models={"m": {"class": "gru2"}}),
        "studies.mini.models.m.class: unknown model class 'gru2'; known: ar_linear, consistent_branch, gru, ngram, rule_mixture, table_per_position, transformer, valid_uniform",
    ),
    (
        "unknown model key",
        mini_config(models={"m": {"class": "gru", "hiden": 4}}),
        "studies.mini.models.m.hiden: unknown key",
    ),
    (
        "level below one",
        mini_config(evaluate={"levels": [0.5]}),
        "studies.mini.evaluate.levels: every level N must be >= 1, got 0.5",
    ),
    (
        "negative class weight",
        mini_config(teacher=teacher(classes={"a": 1.5, "b": -0.5})),
        "studies.mini.teacher.classes: weight of class 'b' must be >= 0, got -0.5",
    ),
    (
        "class weights not summing to one",
        mini_config(teacher=teacher(classes={"a": 0.5, "b": 0.2})),
        "studies.mini.teacher.classes: weights must sum to 1, got 0.7",
    ),
    ("zero seeds", mini_config(seeds=0), "studies.mini.seeds: Input should be greater than or equal to 1"),
    (
        "checkpoint beyond training",
        mini_config(train={"steps": 10, "checkpoints": [5, 20]}),
        "studies.mini.train: checkpoints: step 20 is beyond the training length steps=10",
    ),
    (
        "unsorted checkpoints",
        mini_config(train={"steps": 20, "checkpoints": [20, 5]}),
        "studies.mini.train: checkpoints: must be strictly increasing, got [20, 5]",
    ),
    (
        "zero batch size",
        mini_config(train={"batch_size": 0}),
        "studies.mini.train.batch_size: Input should be greater than or equal to 1",
    ),
    (
        "nan learning rate",
        mini_config(train={"lr": math.nan}),
        "studies.mini.train.lr: Input should be a finite number",
    ),
    (
        "negative learning rate",
        mini_config(train={"lr": -0.1}),
        "studies.mini.train.lr: Input should be greater than 0",
    ),
    (
        "model cannot fit teacher",
        mini_config(
            teacher={"name": "markov", "vocab_size": 64, "order": 0},
            models={"t": {"class": "table_per_position", "order": 4}},
        ),
        "studies.mini.models.t.order: 4 needs 2.28e+09 table entries at horizon 2 (limit 5e+07); lower the order",
    ),
    (
        "gpu where none exists",
        with_top("execution", {"device": "cuda"}),
        "execution.device: 'cuda' requested but torch sees no GPU on this machine; use 'cpu'",
    ),
    (
        "unknown backend",
        with_top("execution", {"backend": "dask"}),
        "execution.backend: Input should be 'auto', 'serial' or 'ray'",
    ),
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
    with pytest.raises(
        ValueError, match=r"metrics.parquet: not a readable Parquet table .*delete it and rerun its stage"
    ):
        io.read_parquet(broken)
    with pytest.raises(FileNotFoundError, match=r"absent.parquet: missing; rerun the stage that writes it"):
        io.read_parquet(tmp_path / "absent.parquet")


def test_checkpoint_from_an_incompatible_version_is_refused(tmp_path):
    torch.save({"covpipe_format": 0, "trials": {}}, tmp_path / "old.pt")
    with pytest.raises(
        ValueError, match=r"old.pt: written by an incompatible covpipe version; delete it and rerun training"
    ):
        io.load_torch(tmp_path / "old.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match=r"cut.pt: not a readable checkpoint file"):
        io.load_torch(tmp_path / "cut.pt")


def test_nan_loss_stops_its_trial_lets_siblings_finish_and_writes_no_table(tmp_path):
    cfg = validate_config(mini_config(train={"optimizer": "sgd", "lr": 1e37, "steps": 20, "checkpoints": [20]}))
    study = cfg["studies"]["mini"]
    spec = specs.train_spec("mini", study, "gru", 4)
    assert spec["train"]["lr"] == 1e37  # the gru's own override keeps the study's optimizer and lr
    (tmp_path / "data").mkdir()
    data = tmp_path / "data" / "train.parquet"
    from covpipe import data as data_stage

    data_stage.run(data, tmp_path / "data" / "eval.parquet", specs.data_spec("mini", study, 4))
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    with pytest.raises(
        TrialsFailed,
        match=r"2 of 2 trials failed:\ngru H=4 seed 0: FloatingPointError: "
        r"gru horizon 4 seed 0: loss is (nan|inf) at step \d+",
    ):
        train.run(data, tmp_path / "ck.pt", tmp_path / "log.parquet", spec)
    assert not (tmp_path / "ck.pt").exists() and not (tmp_path / "log.parquet").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary files left behind either


# ---- issue 15: careless and hostile input, through real Snakemake and the real `covpipe` ------

import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import yaml  # noqa: E402

MINI_YAML = yaml.safe_dump(mini_config(), sort_keys=False)
BOMB = (
    "\n".join(
        ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    )
    + "\n"
)

RAW_CASES = [
    ("duplicate study key", MINI_YAML + "studies: {}\n", r"config/config.yaml: line \d+: studies: duplicate key"),
    (
        "duplicate key deep inside",
        MINI_YAML.replace("      order: 1\n", "      order: 1\n      order: 2\n", 1),
        r"config/config.yaml: line \d+: order: duplicate key",
    ),
    (
        "octal-looking seeds",
        MINI_YAML.replace("seeds: 2", "seeds: 010"),
        r"line \d+: 010: an integer with a leading zero",
    ),
    (
        "boolean seeds",
        MINI_YAML.replace("seeds: 2", "seeds: true"),
        r"studies\.mini\.seeds: Input should be a valid integer, got True",
    ),
    ("alias bomb", BOMB + MINI_YAML, r"config/config.yaml: expands to more than 100000 values"),
    ("not UTF-8", MINI_YAML + "# caf\xe9\n", r"config/config.yaml: not UTF-8 text"),
    ("yte template", "__use_yte__: true\n" + MINI_YAML, r"__use_yte__: unknown top-level key"),
    (
        "study name with a trailing newline",
        MINI_YAML.replace("  mini:\n", '  "mini\\n":\n', 1),
        r"studies\.'mini\\n': names must match",
    ),
    ("horizon 1e9", MINI_YAML.replace("- 4\n", "- 1000000000\n", 1), r"studies\.mini\.(horizons|models\.tpp\.order): "),
    (
        "n_eval 1e12",
        MINI_YAML.replace("n_eval: 64", "n_eval: 1000000000000"),
        r"studies\.mini\.data\.n_eval: the data job at horizon 2 would need about .* GiB.*; the limit is",
    ),
    (
        "class named 'all'",
        MINI_YAML.replace("      a: 0.7", "      all: 0.7"),
        r"teacher\.classes\.all: 'all' is a label",
    ),
    (
        "nan in the teacher",
        MINI_YAML.replace("order: 1\n", "order: 1\n      alpha: .nan\n", 1),
        r"studies\.mini\.teacher\.alpha: Input should be a finite number, got nan",
    ),
    (
        "malformed ray address",
        MINI_YAML.replace("backend: serial", "backend: ray\n  ray_address: http://x"),
        r"execution\.ray_address: 'http://x': expected 'local', 'run', 'auto' or host:port",
    ),
    (
        "unreachable ray address",
        MINI_YAML.replace("backend: serial", "backend: ray\n  ray_address: 127.0.0.1:1"),
        r"execution\.ray_address: 127\.0\.0\.1:1: no Ray cluster answers there",
    ),
    (
        "yes as a boolean",
        MINI_YAML.replace("n_eval: 64", "n_eval: 64\n      shared_across_seeds: yes"),
        r"studies\.mini\.data\.shared_across_seeds: Input should be a valid boolean, got yes",
    ),
    (
        "quoted number",
        MINI_YAML.replace("seeds: 2", "seeds: '2'"),
        r"studies\.mini\.seeds: Input should be a valid integer",
    ),
    (
        "gru hidden 1e6",
        MINI_YAML.replace("hidden: 4", "hidden: 1000000"),
        r"studies\.mini\.models\.gru: the train job at horizon 2 would need about .* GiB, mostly model parameters",
    ),
    (
        "memory limit below the study",
        MINI_YAML.replace("backend: serial", "backend: serial\n  memory_gb: 0.00001"),
        r"studies\.mini\.data\.n_train: the data job at horizon 2 would need about .*; the limit is 1e-05 GiB "
        r"\(execution\.memory_gb\)$",
    ),
    (
        "model name too long",
        MINI_YAML.replace("    gru:\n", "    " + "g" * 65 + ":\n", 1),
        r"studies\.mini\.models\.g+\.\.\.: names must match .* at most 64 characters",
    ),
    (
        "inf in a model",
        MINI_YAML.replace("order: 1\n      gru:", "order: 1\n        smoothing: .inf\n      gru:", 1),
        r"studies\.mini\.models\.tpp\.smoothing: Input should be a finite number, got inf",
    ),
    (
        "selection without a reward",
        MINI_YAML.replace("    seeds: 2\n", "    seeds: 2\n    selection: {}\n", 1),
        r"studies\.mini: selection: teacher 'markov' has no notion of a correct response",
    ),
]


def refused_by_snakemake(directory, *args):
    proc = snakemake(directory, "-n", *args, check=False)
    lines = [line for line in proc.stderr.splitlines() if "covpipe:" in line]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Job stats" not in proc.stdout
    return lines[0]


@pytest.mark.workflow
@pytest.mark.parametrize("text,message", [c[1:] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES])
def test_hostile_config_file_is_refused_before_planning_and_nothing_changes(finished, text, message):
    directory, _ = finished
    before = snapshot(directory)
    (directory / "config" / "config.yaml").write_bytes(text.encode("latin-1") if "caf" in text else text.encode())
    try:
        line = refused_by_snakemake(directory)
    finally:
        mini_config_writer(directory, mini_config())
    assert line.startswith("covpipe: invalid config: config/config.yaml: ") and re.search(message, line), line
    assert len(line) < 400
    assert snapshot(directory) == before


@pytest.mark.workflow
def test_a_bad_override_is_blamed_on_the_override(finished):
    directory, _ = finished
    before = snapshot(directory)
    line = refused_by_snakemake(directory, "--config", "execution={backend: dask}")
    assert line.startswith("covpipe: invalid config: --config: execution.backend: Input should be"), line
    line = refused_by_snakemake(directory, "--config", "studys=1")
    assert line.startswith("covpipe: invalid config: --config: studys: unknown top-level key"), line
    assert snapshot(directory) == before


@pytest.mark.workflow
def test_check_and_workflow_read_a_config_alike(finished, tmp_path):
    """The same file is refused by `covpipe check` and by the workflow with the same words."""
    directory, _ = finished
    text = MINI_YAML.replace("seeds: 2", "seeds: 2\n    seeds: 3")
    (directory / "config" / "config.yaml").write_text(text)
    try:
        line = refused_by_snakemake(directory)
    finally:
        mini_config_writer(directory, mini_config())
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(text)
    check = subprocess.run(
        [sys.executable, "-m", "covpipe.cli", "check", "config/config.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 2 and check.stderr.strip().splitlines()[-1] == line.replace("invalid config: ", "")


@pytest.mark.workflow
def test_logs_path_that_is_a_file_is_refused(tmp_path):
    mini_config_writer(tmp_path, mini_config())
    (tmp_path / "logs").write_text("not a directory")
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0 and "covpipe: logs: logs directory is a file, not a directory" in proc.stderr


# Stage commands run by hand against the finished miniature study: each refuses in one line
# naming the file, and nothing under results/ changes.
R = "results/mini"
STAGE_CASES = [
    (
        "checkpoint of another horizon",
        [
            "evaluate",
            "--model",
            "gru",
            "--horizon",
            "4",
            "--eval",
            f"{R}/data/horizon~4/eval.parquet",
            "--checkpoints",
            f"{R}/train/model~gru/horizon~2/checkpoints.pt",
            "--metrics",
            "OUT/m.parquet",
            "--log-ratios",
            "OUT/r.parquet",
        ],
        r"horizon~2/checkpoints.pt: this checkpoint was made for horizon 2, not 4",
    ),
    (
        "checkpoint of another model",
        [
            "evaluate",
            "--model",
            "gru",
            "--horizon",
            "4",
            "--eval",
            f"{R}/data/horizon~4/eval.parquet",
            "--checkpoints",
            f"{R}/train/model~tpp/horizon~4/checkpoints.pt",
            "--metrics",
            "OUT/m.parquet",
            "--log-ratios",
            "OUT/r.parquet",
        ],
        r"model~tpp/horizon~4/checkpoints.pt: this checkpoint was made for model tpp, not gru",
    ),
    (
        "eval table of another horizon",
        [
            "evaluate",
            "--model",
            "gru",
            "--horizon",
            "4",
            "--eval",
            f"{R}/data/horizon~2/eval.parquet",
            "--checkpoints",
            f"{R}/train/model~gru/horizon~4/checkpoints.pt",
            "--metrics",
            "OUT/m.parquet",
            "--log-ratios",
            "OUT/r.parquet",
        ],
        r"horizon~2/eval.parquet: column response holds .*, expected 4 tokens per row at horizon 4",
    ),
    (
        "training table of another horizon",
        [
            "train",
            "--model",
            "gru",
            "--horizon",
            "2",
            "--data",
            f"{R}/data/horizon~4/train.parquet",
            "--checkpoints",
            "OUT/c.pt",
            "--log",
            "OUT/l.parquet",
        ],
        r"horizon~4/train.parquet: column response holds .*, expected 2 tokens",
    ),
    (
        "eval table given as training data",
        [
            "train",
            "--model",
            "gru",
            "--horizon",
            "4",
            "--data",
            f"{R}/data/horizon~4/eval.parquet",
            "--checkpoints",
            "OUT/c.pt",
            "--log",
            "OUT/l.parquet",
        ],
        r"eval.parquet: column seed missing",
    ),
    (
        "metrics table given as training data",
        [
            "train",
            "--model",
            "gru",
            "--horizon",
            "4",
            "--data",
            f"{R}/metrics.parquet",
            "--checkpoints",
            "OUT/c.pt",
            "--log",
            "OUT/l.parquet",
        ],
        r"metrics.parquet: column cls missing",
    ),
    (
        "output equal to the input",
        [
            "train",
            "--model",
            "gru",
            "--horizon",
            "4",
            "--data",
            f"{R}/data/horizon~4/train.parquet",
            "--checkpoints",
            f"{R}/data/horizon~4/train.parquet",
            "--log",
            "OUT/l.parquet",
        ],
        r"train.parquet: --checkpoints is the same file as --data; a stage never overwrites its inputs",
    ),
    (
        "two outputs on one file",
        ["data", "--horizon", "4", "--train", "OUT/t.parquet", "--eval", "OUT/t.parquet"],
        r"OUT/t.parquet: --eval is the same file as --train",
    ),
    (
        "a directory where a file is expected",
        [
            "train",
            "--model",
            "gru",
            "--horizon",
            "4",
            "--data",
            f"{R}/data/horizon~4",
            "--checkpoints",
            "OUT/c.pt",
            "--log",
            "OUT/l.parquet",
        ],
        r"horizon~4: is a directory, not a file",
    ),
    (
        "an output that is a directory",
        [
            "train",
            "--model",
            "gru",
            "--horizon",
            "4",
            "--data",
            f"{R}/data/horizon~4/train.parquet",
            "--checkpoints",
            "OUT",
            "--log",
            "OUT/l.parquet",
        ],
        r"OUT: --checkpoints is a directory; give a file name",
    ),
    (
        "zero threads",
        [
            "train",
            "--model",
            "gru",
            "--horizon",
            "4",
            "--data",
            f"{R}/data/horizon~4/train.parquet",
            "--checkpoints",
            "OUT/c.pt",
            "--log",
            "OUT/l.parquet",
            "--threads",
            "0",
        ],
        r"covpipe: train: argument --threads: expected a whole number >= 1, got 0",
    ),
    (
        "a table given as a checkpoint",
        [
            "evaluate",
            "--model",
            "gru",
            "--horizon",
            "4",
            "--eval",
            f"{R}/data/horizon~4/eval.parquet",
            "--checkpoints",
            f"{R}/data/horizon~4/train.parquet",
            "--metrics",
            "OUT/m.parquet",
            "--log-ratios",
            "OUT/r.parquet",
        ],
        r"train.parquet: not a readable checkpoint file \(.*\); delete it and rerun training$",
    ),
]


@pytest.mark.workflow
@pytest.mark.parametrize("args,message", [c[1:] for c in STAGE_CASES], ids=[c[0] for c in STAGE_CASES])
def test_stage_command_refuses_inputs_made_for_another_cell(finished, tmp_path, args, message):
    directory, _ = finished
    before = snapshot(directory)
    args = [a.replace("OUT", str(tmp_path)) for a in args]
    command = [
        sys.executable,
        "-m",
        "covpipe.cli",
        args[0],
        "--config",
        "config/config.yaml",
        "--study",
        "mini",
        *args[1:],
    ]
    proc = subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("covpipe:")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert re.search(message.replace("OUT", re.escape(str(tmp_path))), lines[0]), lines[0]
    assert snapshot(directory) == before
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing written, not even a temporary file


@pytest.mark.workflow
def test_a_checkpoint_of_another_study_is_refused(finished, tmp_path):
    directory, _ = finished
    other = mini_config()
    other["studies"]["other"] = other["studies"].pop("mini")
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    command = [
        sys.executable,
        "-m",
        "covpipe.cli",
        "evaluate",
        "--config",
        str(tmp_path / "other.yaml"),
        "--study",
        "other",
        "--model",
        "gru",
        "--horizon",
        "4",
        "--eval",
        f"{R}/data/horizon~4/eval.parquet",
        "--checkpoints",
        f"{R}/train/model~gru/horizon~4/checkpoints.pt",
        "--metrics",
        str(tmp_path / "m.parquet"),
        "--log-ratios",
        str(tmp_path / "r.parquet"),
    ]
    proc = subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert re.search(
        r"covpipe: results/mini/data/horizon~4/eval.parquet: this table was made for another study "
        r"\(mini, not other\)",
        proc.stderr,
    ), proc.stderr[-2000:]


@pytest.mark.workflow
def test_every_table_a_stage_writes_carries_what_it_was_made_from(finished):
    import polars as pl

    directory, _ = finished
    tables = {
        "data": f"{R}/data/horizon~4/train.parquet",
        "train": f"{R}/train/model~gru/horizon~4/train_log.parquet",
        "evaluate": f"{R}/eval/model~gru/horizon~4/metrics.parquet",
    }
    for stage, path in tables.items():
        meta = pl.read_parquet_metadata(directory / path)
        spec = io.made_from(directory / path)
        assert meta["covpipe_stage"] == stage and spec["study"] == "mini" and spec["horizon"] == 4, path
        assert len(meta["covpipe_spec_sha256"]) == 64


@pytest.mark.workflow
def test_a_table_of_another_study_is_refused_without_its_provenance_file(finished, tmp_path):
    """The table's own metadata says what it was made from, even when copied alone."""
    directory, _ = finished
    copy = tmp_path / "train.parquet"
    copy.write_bytes((directory / R / "data" / "horizon~4" / "train.parquet").read_bytes())
    other = mini_config()
    other["studies"]["other"] = other["studies"].pop("mini")
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    out = tmp_path / "out"
    out.mkdir()
    command = [
        sys.executable,
        "-m",
        "covpipe.cli",
        "train",
        "--config",
        str(tmp_path / "other.yaml"),
        "--study",
        "other",
        "--model",
        "gru",
        "--horizon",
        "4",
        "--data",
        str(copy),
        "--checkpoints",
        str(out / "c.pt"),
        "--log",
        str(out / "l.parquet"),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert re.search(
        r"covpipe: .*train.parquet: this table was made for another study \(mini, not other\)", proc.stderr
    ), proc.stderr[-2000:]
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "column,value,message",
    [
        ("response", 7, r"column response holds token 7, outside the vocabulary 0\.\.2"),
        ("prompt", -1, r"column prompt holds token -1, outside the vocabulary 0\.\.5"),
    ],
)
def test_a_table_with_out_of_vocabulary_tokens_is_refused(tmp_path, column, value, message):
    import numpy as np
    import polars as pl

    from covpipe.sequences import Batch

    mini_config_writer(tmp_path, mini_config())
    n = 8  # markov, V = 3, two classes: prompts are a class marker (3 or 4) then a start state
    batch = Batch(np.tile([[3, 0]], (n, 1)), np.zeros((n, 4), dtype=np.int64), np.zeros(n, dtype=np.int64))
    getattr(batch, column)[0, -1] = value
    table = tmp_path / "train.parquet"
    io.write_parquet(io.batch_to_frame(batch, seed=pl.Series(np.zeros(n), dtype=pl.Int32)), table)
    command = [
        sys.executable,
        "-m",
        "covpipe.cli",
        "train",
        "--config",
        "config/config.yaml",
        "--study",
        "mini",
        "--model",
        "gru",
        "--horizon",
        "4",
        "--data",
        str(table),
        "--checkpoints",
        "c.pt",
        "--log",
        "l.parquet",
    ]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("covpipe:")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert re.search(r"train.parquet: " + message, lines[0]), lines[0]
    assert not (tmp_path / "c.pt").exists() and not (tmp_path / "l.parquet").exists()
