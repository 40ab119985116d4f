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
    from workflow_helpers import ROOT

    from covpipe.config import load_config

    config = ROOT / "config" / "interventions.yaml"
    lower_bound = {f"lb_{lemma}_h{h}" for lemma in ("i6", "i7") for h in (8, 64, 256)}
    assert set(load_config(config)["studies"]) == {
        "interventions_rate",
        "interventions_horizon",
        "interventions_pivotal",
        "kl_lower_bound",
        "sgd_two_scales",
        *lower_bound,
    }
    out = snakemake(tmp_path, "-n", "--configfile", str(config), "--replace-workflow-config").stdout
    table = out.split("Job stats:")[1]
    import re

    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    # 1 + 4 + 4 + 3 + 3 + 6 x 1 horizons; 7 + 9 x 4 + 9 x 4 + 2 x 3 + 6 x 3 + 6 x 6 (model, horizon) cells;
    # 2 + 4 x 3 + 6 figure files
    assert jobs == {"data": 21, "train": 139, "evaluate": 139, "aggregate": 11, "plot": 20, "all": 1, "total": 331}


MINI_LOWER_BOUND = {
    "execution": {"backend": "serial"},
    "studies": {
        "lb": {
            "teacher": {"name": "sgd_lower_bound", "lemma": "I.7", "horizon": 8, "n": 64},
            "horizons": [8],
            "seeds": 2,
            "data": {"n_train": 64, "n_eval": 16},
            "models": {
                "sgd": {"class": "ar_linear", "learner": {"name": "seq_sgd", "eta_units": 8.0}},
                "mle": {"class": "ar_linear", "learner": {"name": "mle_exact"}},
            },
            "train": {"steps": 64, "checkpoints": [32, 64]},
            "evaluate": {"levels": [2, 16]},
            "figures": ["lower_bound"],
        }
    },
}


def test_lower_bound_study_runs_end_to_end_from_the_instance_starting_point(tmp_path):
    import torch

    mini_config_writer(tmp_path, MINI_LOWER_BOUND)
    snakemake(tmp_path)
    results = tmp_path / "results" / "lb"
    table = (results / "figures" / "lower_bound.md").read_text()
    assert "| sgd | 8 |" in table and "| mle | 8 |" in table and "c = 0.25, T = 64" in table
    metrics = pl.read_parquet(results / "metrics.parquet")
    rare = metrics.filter((pl.col("metric") == "coverage") & (pl.col("class") == "rare") & (pl.col("level") == 16))
    # eta = 8/(HB) is too slow for the rare prompts w.p. >= 1/2: uncovered at every checkpoint on a seed of the two
    held = rare.filter(pl.col("model") == "sgd").group_by("seed").agg(pl.col("value").min())["value"]
    assert (held == 1).any()
    saved = torch.load(results / "train" / "model~sgd" / "horizon~8" / "checkpoints.pt", weights_only=False)
    assert saved["spec"]["teacher"]["start"] == pytest.approx([0.6, -0.8])  # theta_0 is in the checkpoint's spec
