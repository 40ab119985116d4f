"""The graph study (paper Figure 2 layout) end to end on a miniature config: exact Pass@N,
reference models, the training figure set."""

import math

import numpy as np
import polars as pl
import pytest

from covpipe import metrics
from covpipe.models import Vocab, build_model
from covpipe.models.base import as_tensor
from covpipe.teachers import build_teacher

from workflow_helpers import mini_config_writer, planned_jobs, snakemake

pytestmark = pytest.mark.workflow

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


def test_graph_study_runs_and_reports_exact_pass_at_n(tmp_path):
    mini_config_writer(tmp_path, GRAPH)
    snakemake(tmp_path)
    results = tmp_path / "results" / "g"
    for name in ("over_training.png", "coverage_profile.png"):
        assert (results / "figures" / name).read_bytes()[:4] == b"\x89PNG"
    table = (results / "figures" / "per_class.md").read_text()
    assert "| consistent_branch | 6 | xor | 0.693 [0.693, 0.693] |" in table
    m = pl.read_parquet(results / "metrics.parquet")
    ref = m.filter((pl.col("model") == "consistent_branch") & (pl.col("metric") == "pass_at_n") & (pl.col("class") == "xor")
                   & (pl.col("horizon") == 6) & (pl.col("seed") == 0))
    # Knowing validity but not the bit: the correct path has probability 1/2, so Pass@N = 1 - 2^-N.
    assert ref.sort("level")["value"].to_list() == pytest.approx([0.5, 1 - 2**-4])
    uni = m.filter((pl.col("model") == "valid_uniform") & (pl.col("metric") == "pass_at_n") & (pl.col("class") == "uniform16"))
    assert uni["value"].to_list() == pytest.approx([1.0] * uni.height)  # every valid path is correct there
    assert planned_jobs(tmp_path) == {}


def test_exact_pass_at_n_agrees_with_the_sampling_estimate():
    """The exact route (teacher forcing over the correct responses) against sampling + unbiased estimator."""
    teacher = build_teacher(TEACHER)
    batch = teacher.sample(40, 4, np.random.default_rng(0), cls=1)  # xor graphs
    vocab = Vocab.of(teacher, 4)
    model = build_model({"class": "valid_uniform"}, vocab, teacher=teacher)
    correct = teacher.correct_responses(batch.prompt, batch.cls)
    p = np.array([math.exp(model.token_log_probs(as_tensor(batch.prompt[i:i + 1].repeat(len(c), 0)),
                                                  as_tensor(c)).sum(1).logsumexp(0).item()) for i, c in enumerate(correct)])
    assert p == pytest.approx(0.25)  # two branching layers, uniform over their options
    import torch

    from covpipe.evaluate import pass_at_n_sampled

    est = pass_at_n_sampled(model, batch, correct, 200, [1, 4], torch.Generator().manual_seed(0))
    exact = metrics.pass_at_n_exact(p, [1, 4])
    assert exact == pytest.approx([0.25, 1 - 0.75**4])
    assert np.abs(est - exact).max() < 0.05  # 40 prompts x 200 draws: standard error about 0.01
