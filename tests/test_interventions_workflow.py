"""The learners through the real workflow: a miniature interventions study (token SGD with its
TTT decoder, the exact MLE) run by Snakemake produces the metrics of both decoders and every
interventions figure."""

import polars as pl
import pytest

from workflow_helpers import mini_config_writer, snakemake

pytestmark = pytest.mark.workflow

MINI_INTERVENTIONS = {
    "execution": {"backend": "serial"},
    "studies": {
        "tiny": {
            "teacher": {"name": "ar_linear", "vocab_size": 3, "dim": 3, "window": 2, "scale": 3.0},
            "horizons": [3, 6],
            "seeds": 2,
            "data": {"n_train": 16, "n_eval": 32},
            "models": {
                "tok": {"class": "ar_linear", "learner": {"name": "token_sgd"}},
                "mle": {"class": "ar_linear", "learner": {"name": "mle_exact"}},
            },
            "train": {"steps": 16, "checkpoints": [8, 16]},
            "evaluate": {"levels": [2, 16], "stopped_kl_levels": [16]},
            "figures": ["interventions", "hard_instance", "rate"],
        }
    },
}


def test_interventions_study_runs_end_to_end(tmp_path):
    mini_config_writer(tmp_path, MINI_INTERVENTIONS)
    snakemake(tmp_path)
    results = tmp_path / "results" / "tiny"
    metrics = pl.read_parquet(results / "metrics.parquet")
    # the last iterate, the average iterate and TTT around each; the exact MLE has no iterates
    assert set(metrics["model"]) == {"tok", "tok+avg", "tok+ttt", "tok+avg+ttt", "mle"}
    assert metrics.filter(pl.col("model") == "tok+ttt")["step"].unique().sort().to_list() == [8, 16]
    assert metrics.filter(pl.col("model") == "tok")["step"].unique().sort().to_list() == [0, 8, 16]  # 0: the start
    start = metrics.filter((pl.col("step") == 0) & (pl.col("metric") == "kl") & (pl.col("class") == "all"))
    assert set(start["model"]) == {"tok", "mle"} and start["value"].n_unique() == 2  # one start per horizon
    sigma = metrics.filter(pl.col("metric") == "sigma_star_sq")
    assert sigma.height > 0 and (sigma["value"] > 0).all()
    ratios = pl.read_parquet(results / "eval" / "model~tok" / "horizon~6" / "log_ratios.parquet")
    assert set(ratios["model"]) == {"tok", "tok+avg", "tok+ttt", "tok+avg+ttt"}
    assert ratios.height == 2 * 32 * (3 + 3 * 2)  # seeds x n x (tok: 3 steps + 3 variants x 2 steps)
    for name in ["horizon_sweep.png", "rate_sweep.png", "hard_instance.png"]:
        assert (results / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (results / "figures" / "interventions_table.md").read_text()
    assert "| tok+ttt | last |" in table and "| tok+ttt | average |" in table and "sigma*^2" in table
    rate = (results / "figures" / "rate_table.md").read_text()
    assert "| tok | average |" in rate and "| mle | last |" in rate and "learns at T" in rate


def test_interventions_config_validates_and_plans_only_its_own_studies(tmp_path):
    from covpipe.config import load_config
    from workflow_helpers import ROOT

    config = ROOT / "config" / "interventions.yaml"
    assert set(load_config(config)["studies"]) == {"interventions_rate", "interventions_horizon", "interventions_pivotal",
                                                   "kl_lower_bound", "sgd_two_scales"}
    out = snakemake(tmp_path, "-n", "--configfile", str(config), "--replace-workflow-config").stdout
    table = out.split("Job stats:")[1]
    import re

    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    # 1 + 4 + 4 + 3 + 3 horizons; 7 + 9 x 4 + 9 x 4 + 2 x 3 + 6 x 3 (model, horizon) cells; 2 + 4 x 3 figure files
    assert jobs == {"data": 15, "train": 103, "evaluate": 103, "aggregate": 5, "plot": 14, "all": 1, "total": 241}
