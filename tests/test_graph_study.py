"""The graph study (paper Figure 2 layout) end to end on a miniature config: exact Pass@N,
reference models, the training figure set."""

import math

import numpy as np
import polars as pl
import pytest
from workflow_helpers import mini_config_writer, planned_jobs, snakemake

from covpipe import metrics
from covpipe.models import Vocab, build_model
from covpipe.teachers import build_teacher

TEACHER = {"name": "graph", "num_nodes": 30, "classes": {"single": 0.9, "xor": 0.05, "uniform16": 0.05}}
GRAPH = {
    "execution": {"backend": "serial"},
    "studies": {
        "g": {
            "teacher": TEACHER,
            "horizons": [4, 6],
            "seeds": 2,
            "data": {"n_train": 200, "n_eval": 16},
            "models": {
                "transformer": {"class": "transformer", "layers": 1, "heads": 2, "width": 16},
                "valid_uniform": {"class": "valid_uniform"},
                "consistent_branch": {"class": "consistent_branch"},
            },
            "train": {"optimizer": "adamw", "lr": 0.003, "batch_size": 16, "steps": 30, "checkpoints": [10, 30]},
            "evaluate": {"levels": [2, 16], "stopped_kl_levels": [16], "pass_at": [1, 4]},
            "figures": ["training"],
        }
    },
}


@pytest.mark.workflow
def test_graph_study_runs_and_reports_exact_pass_at_n(tmp_path):
    mini_config_writer(tmp_path, GRAPH)
    snakemake(tmp_path)
    results = tmp_path / "results" / "g"
    for name in ("over_training.png", "coverage_profile.png"):
        assert (results / "figures" / name).read_bytes()[:4] == b"\x89PNG"
    table = (results / "figures" / "per_class.md").read_text()
    assert "| consistent_branch | 6 | xor | 0.693 [0.693, 0.693] |" in table
    m = pl.read_parquet(results / "metrics.parquet")
    ref = m.filter(
        (pl.col("model") == "consistent_branch")
        & (pl.col("metric") == "pass_at_n")
        & (pl.col("class") == "xor")
        & (pl.col("horizon") == 6)
        & (pl.col("seed") == 0)
    )
    # Knowing validity but not the bit: the correct path has probability 1/2, so Pass@N = 1 - 2^-N.
    assert ref.sort("level")["value"].to_list() == pytest.approx([0.5, 1 - 2**-4])
    uni = m.filter(
        (pl.col("model") == "valid_uniform") & (pl.col("metric") == "pass_at_n") & (pl.col("class") == "uniform16")
    )
    assert uni["value"].to_list() == pytest.approx([1.0] * uni.height)  # every valid path is correct there
    # Independent oracles through the workflow: the reference models' every reported number.
    weights = {"single": 0.9, "xor": 0.05, "uniform16": 0.05}
    last = m.filter((pl.col("seed") == 0) & (pl.col("step") == pl.col("step").max().over("model", "horizon")))
    v = {
        (r["model"], r["horizon"], r["class"], r["metric"], r["level"]): r["value"] for r in last.iter_rows(named=True)
    }
    for h in (4, 6):
        k = h // 2  # xor branching layers; valid_uniform pays ln 2 at each, consistent_branch once
        for model, x_xor, p_xor in (
            ("valid_uniform", k * math.log(2), 2.0**-k),
            ("consistent_branch", math.log(2), 0.5),
        ):
            per_class = {
                "kl": {"single": 0, "xor": x_xor, "uniform16": 0},
                ("coverage", 2.0): {"single": 0, "xor": 1, "uniform16": 0},
                ("coverage", 16.0): {"single": 0, "xor": 0, "uniform16": 0},  # 2^k < 16
                ("stopped_kl", 16.0): {"single": 0, "xor": x_xor, "uniform16": 0},
                ("pass_at_n", 4.0): {"single": 1, "xor": 1 - (1 - p_xor) ** 4, "uniform16": 1},
            }
            for key, want in per_class.items():
                metric, level = key if isinstance(key, tuple) else (key, None)
                for c, value in want.items():
                    assert v[(model, h, c, metric, level)] == pytest.approx(value, abs=1e-9), (model, h, c, key)
                mixture = sum(weights[c] * value for c, value in want.items())
                assert v[(model, h, "all", metric, level)] == pytest.approx(mixture, abs=1e-9), (model, h, key)
        # The trained transformer: its mixture row is the class-weighted average of its class rows.
        for metric, level in (("kl", None), ("coverage", 2.0), ("stopped_kl", 16.0), ("pass_at_n", 4.0)):
            mixture = sum(w * v[("transformer", h, c, metric, level)] for c, w in weights.items())
            assert v[("transformer", h, "all", metric, level)] == pytest.approx(mixture, rel=1e-9, abs=1e-12)
    assert planned_jobs(tmp_path) == {}


def test_exact_pass_at_n_agrees_with_the_sampling_estimate():
    """The exact route of the evaluate stage (teacher forcing over the correct responses, summed per
    prompt) against sampling + the unbiased estimator, on prompts of every class, so p_correct
    differs between prompts (valid_uniform: 1 on single and uniform16 graphs, 1/4 on xor ones) and
    an average taken in the wrong place (Pass@N of the mean p) shows."""
    import torch

    from covpipe.evaluate import _p_correct, pass_at_n_sampled

    teacher = build_teacher({**TEACHER, "classes": {"single": 0.3, "xor": 0.4, "uniform16": 0.3}})
    batch = teacher.sample(60, 4, np.random.default_rng(0))
    model = build_model({"class": "valid_uniform"}, Vocab.of(teacher, 4), teacher=teacher)
    correct = teacher.correct_responses(batch.prompt, batch.cls)
    owner = np.repeat(np.arange(len(batch)), [len(c) for c in correct])
    p = _p_correct(model, batch, owner, np.concatenate(correct))
    closed = np.where(batch.cls == 1, 0.25, 1.0)  # two branching layers on xor graphs, uniform over them
    assert p == pytest.approx(closed) and 0.2 < (batch.cls == 1).mean() < 0.8
    ns, k = [1, 4], 400
    exact = metrics.pass_at_n_exact(p, ns)
    assert exact == pytest.approx([closed.mean(), np.mean(1 - (1 - closed) ** 4)])
    est = pass_at_n_sampled(model, batch, correct, k, ns, torch.Generator().manual_seed(0))
    # Delta-method standard error of the mean over prompts of the per-prompt estimate of 1 - (1 - p)^N.
    for n, e, x in zip(ns, est, exact):
        se = math.sqrt(np.mean(n**2 * (1 - p) ** (2 * n - 2) * p * (1 - p)) / (k * len(p)))
        assert abs(e - x) <= 5 * se, (n, e, x, se)  # se about 0.003 (N = 1) and 0.002 (N = 4)
