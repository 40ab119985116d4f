"""The real Snakemake workflow on a miniature config: plan, run, nothing left, partial reruns,
bad configs refused before any job, lint and format clean."""

import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from helpers import mini_config
from workflow_helpers import mini_config_writer as write_config
from workflow_helpers import planned_jobs, snakemake

ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.workflow


def test_dry_run_plans_one_job_per_cell(finished):
    _, plan = finished
    # 2 horizons; 2 models x 2 horizons for train and evaluate; one aggregate per study, one job per figure.
    assert plan == {"all": 1, "aggregate": 1, "data": 2, "evaluate": 4, "plot": 4, "train": 4}


def test_run_produces_every_table_and_figure(finished):
    directory, _ = finished
    results = directory / "results" / "mini"
    metrics = pl.read_parquet(results / "metrics.parquet")
    assert set(metrics["model"]) == {"tpp", "gru"} and set(metrics["horizon"]) == {2, 4}
    assert set(metrics["class"]) == {"all", "a", "b"}
    assert set(metrics["metric"]) == {"kl", "prefix_kl", "ce", "entropy", "coverage", "stopped_kl", "token_accuracy"}
    assert metrics.filter(pl.col("model") == "gru")["step"].unique().sort().to_list() == [5, 20]
    assert metrics["value"].is_nan().sum() == 0
    ratios = pl.read_parquet(results / "eval" / "model~gru" / "horizon~4" / "log_ratios.parquet")
    assert ratios.height == 2 * 2 * 128  # seeds x checkpoints x (64 per class x 2 classes)
    # The stored log-ratios reproduce the table's coverage exactly.
    import numpy as np

    from covpipe.evaluate import class_weights
    from covpipe.metrics import coverage_profile

    last = ratios.filter((pl.col("seed") == 1) & (pl.col("step") == 20)).sort("index")
    w = class_weights(last["cls"].to_numpy(), np.array([0.7, 0.3]))
    row = metrics.filter(
        (pl.col("model") == "gru")
        & (pl.col("horizon") == 4)
        & (pl.col("seed") == 1)
        & (pl.col("step") == 20)
        & (pl.col("class") == "all")
        & (pl.col("metric") == "coverage")
    )
    assert row.sort("level")["value"].to_numpy() == pytest.approx(
        coverage_profile(last["log_ratio"].to_numpy(), [2, 16], w)
    )
    for name in ["kl_vs_horizon", "coverage_vs_horizon", "coverage_profile", "training_curves"]:
        png = results / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert (results / "metrics.parquet").exists() and list((directory / "logs").rglob("*.log"))
    assert list((directory / "benchmarks").rglob("*.tsv"))


def test_second_dry_run_has_nothing_to_do(finished):
    directory, _ = finished
    assert planned_jobs(directory) == {}


def test_changing_an_evaluation_level_replans_only_evaluation_and_below(finished):
    directory, _ = finished
    cfg = mini_config(evaluate={"levels": [2, 16, 256], "stopped_kl_levels": [16]})
    write_config(directory, cfg)
    try:
        plan = planned_jobs(directory)
    finally:
        write_config(directory, mini_config())
    assert plan == {"all": 1, "aggregate": 1, "evaluate": 4, "plot": 4}


def test_changing_an_execution_setting_replans_nothing(finished):
    directory, _ = finished
    cfg = mini_config()
    cfg["execution"] = {"backend": "ray", "ray_address": "local"}
    write_config(directory, cfg)
    try:
        assert planned_jobs(directory) == {}
    finally:
        write_config(directory, mini_config())


@pytest.mark.parametrize(
    "change,message",
    [
        ({"horizons": [2, -4]}, "studies.mini.horizons[1]: horizon must be >= 1, got -4"),
        (
            {"models": {"m": {"class": "gru2"}}},
            "studies.mini.models.m.class: unknown model class 'gru2'; known: ar_linear, consistent_branch, gru, ngram, rule_mixture, table_per_position, transformer, valid_uniform",
        ),
        ({"train": {"lr": "fast"}}, "studies.mini.train.lr: Input should be a valid number"),
    ],
)
def test_bad_config_is_refused_before_any_job(tmp_path, change, message):
    write_config(tmp_path, mini_config(**change))
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


def test_lint_and_format_are_clean(tmp_path):
    write_config(tmp_path, mini_config())
    lint = snakemake(tmp_path, "--lint", check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    snakefmt = shutil.which("snakefmt", path=str(Path(sys.executable).parent))
    files = [str(ROOT / "Snakefile"), *map(str, (ROOT / "workflow" / "rules").glob("*.smk"))]
    fmt = subprocess.run([snakefmt, "--check", *files], capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
