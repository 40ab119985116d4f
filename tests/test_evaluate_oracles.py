"""Independent oracles for the evaluate stage: hand-built cases whose every reported number is known
in closed form, run through the real data, train and evaluate stages (covpipe.data/train/evaluate
.run, Parquet files in between) with the graph task's reference models, whose probabilities are
exact:
    consistent_branch  equals pi_D on every class but xor; on xor graphs it pays ln 2 once
    valid_uniform      uniform over the valid next nodes: (k branching layers) k ln 2 on a graph
                       whose class picks one node per layer, 0 where every valid path is as likely
Classes: single (no branching), xor (H/2 branching layers, one correct path), uniform16 (4 layers,
every valid path correct), match / mismatch (2 layers, one rule each), uniform4 (2 layers, any)."""

import math

import numpy as np
import polars as pl
import pytest
import torch
from helpers import mini_config

from covpipe import data, evaluate, io, specs, train
from covpipe.config import validate_config
from covpipe.evaluate import _p_correct
from covpipe.models import Vocab, build_model
from covpipe.teachers import build_teacher

LN2 = math.log(2)


def evaluated(
    tmp_path, teacher: dict, model: str, horizon: int = 4, levels=(2, 4, 16), stopped=(2, 16), pass_at=(1, 4), n_eval=96
):
    """metrics.parquet (as {(class, metric, level): value} of seed 0) and log_ratios.parquet of one
    reference model on one teacher, through the real stage functions."""
    cfg = validate_config(
        mini_config(
            teacher=teacher,
            horizons=[horizon],
            seeds=1,
            data={"n_train": 8, "n_eval": n_eval},
            models={model: {"class": model}},
            evaluate={"levels": list(levels), "stopped_kl_levels": list(stopped), "pass_at": list(pass_at)},
        )
    )
    study = cfg["studies"]["mini"]
    data.run(tmp_path / "train.parquet", tmp_path / "eval.parquet", specs.data_spec("mini", study, horizon))
    spec = specs.train_spec("mini", study, model, horizon)
    train.run(tmp_path / "train.parquet", tmp_path / "c.pt", tmp_path / "log.parquet", spec, backend="serial")
    evaluate.run(
        tmp_path / "eval.parquet",
        tmp_path / "c.pt",
        tmp_path / "m.parquet",
        tmp_path / "r.parquet",
        specs.evaluate_spec(spec, study["evaluate"]),
        backend="serial",
    )
    table = pl.read_parquet(tmp_path / "m.parquet")
    assert set(table["seed"]) == {0}
    values = {(r["class"], r["metric"], r["level"]): r["value"] for r in table.iter_rows(named=True)}
    assert len(values) == table.height  # one row per (class, metric, level)
    return values, pl.read_parquet(tmp_path / "r.parquet"), pl.read_parquet(tmp_path / "eval.parquet")


def test_a_model_equal_to_the_teacher_scores_kl_zero_and_the_teachers_pass_at_n(tmp_path):
    """consistent_branch is pi_D on a graph teacher without xor (here with the posterior mixture of
    match and uniform4, which share a structure): KL 0, Cov_N 0 for N > 1, stopped KL 0, CE equal to
    the entropy, and Pass@N the teacher's own: E[1 - (1 - pi_D(correct | x))^N], with pi_D of the
    correct paths computed from the teacher alone."""
    spec = {"name": "graph", "num_nodes": 30, "classes": {"single": 0.5, "match": 0.2, "uniform4": 0.3}}
    v, ratios, ev = evaluated(tmp_path, spec, "consistent_branch")
    assert np.abs(ratios["log_ratio"].to_numpy()).max() < 1e-12
    teacher = build_teacher(spec)
    for cls in ("all", "single", "match", "uniform4"):
        assert v[(cls, "kl", None)] == pytest.approx(0, abs=1e-12)
        assert v[(cls, "ce", None)] == pytest.approx(v[(cls, "entropy", None)], abs=1e-12)
        for n in (2.0, 4.0, 16.0):
            assert v[(cls, "coverage", n)] == 0.0
        for n in (2.0, 16.0):
            assert v[(cls, "stopped_kl", n)] == pytest.approx(0, abs=1e-12)
    # The teacher's Pass@N, class by class, from the teacher's probabilities of the correct paths.
    batch = io.frame_to_batch(ev)
    correct = teacher.correct_responses(batch.prompt, batch.cls)
    p_teacher = np.array(
        [
            np.exp(teacher.sequence_log_probs(np.repeat(batch.prompt[i : i + 1], len(c), 0), c)).sum()
            for i, c in enumerate(correct)
        ]
    )
    match = batch.cls == 1
    assert p_teacher[~match] == pytest.approx(1.0)  # single: one path; uniform4: every valid path is correct
    assert (p_teacher[match] < 1 - 1e-3).any()  # match prompts shared with uniform4: the posterior mixture
    for n in (1, 4):
        per_class = {
            c: float(np.mean(1 - (1 - p_teacher[batch.cls == k]) ** n))
            for k, c in enumerate(("single", "match", "uniform4"))
        }
        for c, want in per_class.items():
            assert v[(c, "pass_at_n", float(n))] == pytest.approx(want, rel=1e-9)
        mixture = 0.5 * per_class["single"] + 0.2 * per_class["match"] + 0.3 * per_class["uniform4"]
        assert v[("all", "pass_at_n", float(n))] == pytest.approx(mixture, rel=1e-9)


def test_consistent_branch_on_xor_graphs_pays_ln_2_once(tmp_path):
    """Every xor sequence: log ratio ln 2 exactly. So KL = ln 2, Cov_2 = 1 (ratio exactly 2 counts),
    Cov_4 = Cov_16 = 0, stopped KL min(ln N, ln 2) = ln 2, and the correct path has probability 1/2:
    Pass@N = 1 - 2^-N."""
    v, ratios, _ = evaluated(tmp_path, {"name": "graph", "num_nodes": 30, "classes": {"xor": 1.0}}, "consistent_branch")
    np.testing.assert_allclose(ratios["log_ratio"].to_numpy(), LN2, rtol=0, atol=1e-12)
    assert {c for c, _, _ in v} == {"all"}  # one class: no per-class rows
    assert v[("all", "kl", None)] == pytest.approx(LN2, abs=1e-12)
    assert (v[("all", "coverage", 2.0)], v[("all", "coverage", 4.0)], v[("all", "coverage", 16.0)]) == (1.0, 0.0, 0.0)
    assert v[("all", "stopped_kl", 2.0)] == pytest.approx(LN2, abs=1e-12)
    assert v[("all", "stopped_kl", 16.0)] == pytest.approx(LN2, abs=1e-12)
    assert v[("all", "pass_at_n", 1.0)] == pytest.approx(0.5, abs=1e-12)
    assert v[("all", "pass_at_n", 4.0)] == pytest.approx(1 - 2**-4, abs=1e-12)


def test_mixture_row_is_the_class_weighted_average_of_the_class_rows(tmp_path):
    """valid_uniform on single / xor / uniform16 at H = 4: per-sequence log ratios 0, 2 ln 2 and 0;
    the correct-path probabilities 1, 1/4 and 1. The "all" row weighs classes by the configured
    weights (0.2, 0.5, 0.3), not by their counts in the class-stratified sample (equal): KL = 0.5 * 2 ln 2, Cov_4 = 0.5,
    stopped KL at N = 2: 0.5 ln 2, Pass@N = 0.5 + 0.5 (1 - (3/4)^N)."""
    spec = {"name": "graph", "num_nodes": 30, "classes": {"single": 0.2, "xor": 0.5, "uniform16": 0.3}}
    v, ratios, ev = evaluated(tmp_path, spec, "valid_uniform")
    counts = ev["cls"].value_counts().sort("cls")["count"].to_list()
    assert len(counts) == 3 and len(set(counts)) == 1  # a plain mean would weigh the classes 1/3 each
    x = ratios["log_ratio"].to_numpy()
    cls = ratios["cls"].to_numpy()
    np.testing.assert_allclose(x[cls == 1], 2 * LN2, atol=1e-12)
    np.testing.assert_allclose(x[cls != 1], 0, atol=1e-12)
    closed = {
        "kl": (0, 2 * LN2, 0),
        "prefix_kl": (0, 2 * LN2, 0),
        ("coverage", 4.0): (0, 1, 0),
        ("coverage", 16.0): (0, 0, 0),
        ("stopped_kl", 2.0): (0, LN2, 0),
        ("stopped_kl", 16.0): (0, 2 * LN2, 0),
        ("pass_at_n", 1.0): (1, 0.25, 1),
        ("pass_at_n", 4.0): (1, 1 - 0.75**4, 1),
    }
    weights = (0.2, 0.5, 0.3)
    for key, per_class in closed.items():
        metric, level = key if isinstance(key, tuple) else (key, None)
        for c, want in zip(("single", "xor", "uniform16"), per_class):
            assert v[(c, metric, level)] == pytest.approx(want, abs=1e-12), (c, metric, level)
        assert v[("all", metric, level)] == pytest.approx(np.dot(weights, per_class), abs=1e-12), (metric, level)
    assert v[("all", "kl", None)] == pytest.approx(LN2)


def test_stopped_kl_follows_the_per_token_kls(tmp_path):
    """valid_uniform on xor graphs at H = 8: ln 2 of token KL at each of the 4 branching layers, 0
    elsewhere, so sum_h KL_h = 4 ln 2 and D_seq,N = min(ln N, 4 ln 2): ln 2 at N = 2, ln 8 at N = 8,
    4 ln 2 at N = 32; the sequence KL is 4 ln 2 and Cov_16 = 1 (ratio exactly 16), Cov_17 = 0."""
    v, _, _ = evaluated(
        tmp_path,
        {"name": "graph", "num_nodes": 40, "classes": {"xor": 1.0}},
        "valid_uniform",
        horizon=8,
        levels=(16, 17),
        stopped=(2, 8, 32),
        pass_at=(1,),
    )
    for n, want in ((2.0, LN2), (8.0, math.log(8)), (32.0, 4 * LN2)):
        assert v[("all", "stopped_kl", n)] == pytest.approx(want, abs=1e-12)
    assert v[("all", "kl", None)] == pytest.approx(4 * LN2, abs=1e-12)
    assert v[("all", "prefix_kl", None)] == pytest.approx(4 * LN2, abs=1e-12)  # sum_h KL_h, the same expectation
    assert (v[("all", "coverage", 16.0)], v[("all", "coverage", 17.0)]) == (1.0, 0.0)
    assert v[("all", "pass_at_n", 1.0)] == pytest.approx(1 / 16, abs=1e-12)


@pytest.mark.parametrize(
    "model,want",
    [
        # uniform over the 4 valid paths: half of the mass agrees, half matches at the first layer
        ("valid_uniform", {"all": (1, 0.5, 0.5), "match": (1, 0.5, 0.5), "mismatch": (1, 0.5, 0.5)}),
        # pi_D (no xor class): the class's own rule at both layers; 'all' weighs match 0.7, mismatch 0.3
        ("consistent_branch", {"all": (1, 1, 0.7), "match": (1, 1, 1), "mismatch": (1, 1, 0)}),
    ],
)
def test_branch_agreement_and_first_branch_match_on_known_path_probabilities(tmp_path, model, want):
    """Fig. 1 graphs (match 0.7, mismatch 0.3; the prompt's parity bit tells them apart): the
    model's probabilities of the 4 valid paths are known, so valid_mass, branch_agreement and
    first_branch_match are too."""
    spec = {"name": "graph", "num_nodes": 30, "classes": {"match": 0.7, "mismatch": 0.3}}
    v, _, _ = evaluated(tmp_path, spec, model)
    for cls, (mass, agreement, first) in want.items():
        assert v[(cls, "valid_mass", None)] == pytest.approx(mass, abs=1e-12)
        assert v[(cls, "branch_agreement", None)] == pytest.approx(agreement, abs=1e-12)
        assert v[(cls, "first_branch_match", None)] == pytest.approx(first, abs=1e-12)


class FourPaths(torch.nn.Module):
    """A hand-built model that gives each prompt's 4 valid Fig. 1 paths [mm, mx, xm, xx] the
    probabilities `q` (and every other response probability 0): a model of known path probabilities
    that, unlike the reference models, treats the two branching layers differently."""

    def __init__(self, prompts, paths, q):
        super().__init__()
        self.register_buffer("anchor", torch.zeros(1))  # the device evaluate reads off the state
        self.table = {(tuple(x), tuple(y)): math.log(p) for x, ys in zip(prompts, paths) for y, p in zip(ys, q)}

    def token_log_probs(self, prompt, response):
        out = torch.zeros(response.shape, dtype=torch.float64)
        out[:, 0] = torch.tensor(
            [self.table.get((tuple(x), tuple(y)), -math.inf) for x, y in zip(prompt.tolist(), response.tolist())],
            dtype=torch.float64,
        )
        return out  # (n, L): the sequence log-probability at position 0, zeros after it


def test_first_branch_match_reads_the_first_layer_and_agreement_both():
    """q = (0.4, 0.3, 0.2, 0.1) on (mm, mx, xm, xx): valid mass 1, agreement q_mm + q_xx = 0.5, first
    branch match q_mm + q_mx = 0.7 (the second layer's match share would be 0.6); halving q halves
    the valid mass and leaves the shares."""
    teacher = build_teacher({"name": "graph", "num_nodes": 30, "classes": {"match": 0.5, "mismatch": 0.5}})
    batch = teacher.sample(12, 4, np.random.default_rng(5))
    paths = teacher.branch_choice_paths(batch.prompt)
    for scale, mass in ((1.0, 1.0), (0.5, 0.5)):
        q = [scale * x for x in (0.4, 0.3, 0.2, 0.1)]
        got = evaluate._branch_diagnostics(FourPaths(batch.prompt, paths, q), batch, paths)
        np.testing.assert_allclose(got["valid_mass"], mass, atol=1e-12)
        np.testing.assert_allclose(got["branch_agreement"], 0.5, atol=1e-12)
        np.testing.assert_allclose(got["first_branch_match"], 0.7, atol=1e-12)


def test_total_correct_path_probability_is_summed_per_prompt_and_capped_at_one():
    """uniform16 graphs under valid_uniform: 16 correct paths of 1/16 each, summed per prompt to 1 (the
    float sum may exceed 1 by an ulp: the cap keeps Pass@N defined); xor graphs: 1/4; the sums are
    attributed to their own prompts in a mixed batch."""
    spec = {"name": "graph", "num_nodes": 30, "classes": {"xor": 0.5, "uniform16": 0.5}}
    teacher = build_teacher(spec)
    batch = teacher.sample(40, 4, np.random.default_rng(2))
    model = build_model({"class": "valid_uniform"}, Vocab.of(teacher, 4), teacher=teacher)
    correct = teacher.correct_responses(batch.prompt, batch.cls)
    assert sorted({len(c) for c in correct}) == [1, 16]
    owner = np.repeat(np.arange(len(batch)), [len(c) for c in correct])
    p = _p_correct(model, batch, owner, np.concatenate(correct))
    np.testing.assert_allclose(p, np.where(batch.cls == 1, 1.0, 0.25), rtol=0, atol=1e-12)
    assert (p <= 1.0).all()
    # A response listed twice (two correct responses that coincide) still cannot push p above 1.
    doubled = _p_correct(model, batch, np.concatenate([owner, owner]), np.concatenate(correct * 2))
    assert (doubled <= 1.0).all() and doubled[batch.cls == 1] == pytest.approx(1.0)
