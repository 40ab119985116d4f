"""Checkpoint selection (covpipe.selection) on hand-built candidate sets whose answer is known,
and the Figure 1 study (pre-train -> finetune -> evaluate -> select -> figures) end to end."""

import math

import numpy as np
import polars as pl
import pytest
import torch
from workflow_helpers import mini_config_writer, planned_jobs, snakemake

from covpipe import selection
from covpipe.models import Vocab, build_model
from covpipe.teachers import build_teacher
from covpipe.teachers.graph import Graph


def two_outcome_sample(n=1000, minority=10):
    """Held-out y ~ pi_D with pi_D(a) = 0.99, pi_D(b) = 0.01: exactly `minority` b's."""
    return np.array([0] * (n - minority) + [1] * minority)


def log_likelihoods(sample, candidates):
    """(K, n) log pi_k(y_i) of two-outcome candidates given as P(b)."""
    return np.stack([np.log(np.where(sample == 1, pb, 1 - pb)) for pb in candidates])


def test_min_ce_drops_the_minority_mode_and_the_tournament_keeps_it():
    y = two_outcome_sample()
    # A nearly ignores b (CE 0.070 nats), B covers it (CE 0.127 nats).
    logp = log_likelihoods(y, [0.001, 0.1])
    assert selection.cross_entropies(logp) == pytest.approx(
        [-(0.99 * math.log(0.999) + 0.01 * math.log(0.001)), -(0.99 * math.log(0.9) + 0.01 * math.log(0.1))]
    )
    assert selection.min_ce(logp) == 0
    # At N = 4: B beats A by ln 100 on every b (S[A, B] = 0.01); A never beats B by ln 4 (S[B, A] = 0).
    assert selection.cover_matrix(logp, 4) == pytest.approx(np.array([[0, 0.01], [0, 0]]))
    assert selection.tournament(logp, 4) == 1


def test_offset_tournament_matches_its_formula_and_its_answer():
    y = two_outcome_sample()
    logp = log_likelihoods(y, [0.001, 0.1])
    # Generations of each candidate at 1000 prompts: A emits b once, B 100 times.
    draws = {0: two_outcome_sample(minority=1), 1: two_outcome_sample(minority=100)}
    own = np.stack([log_likelihoods(draws[j], [0.001, 0.1]) for j in (0, 1)])  # [j, k, i]
    # On-policy S_on[j, k]: under A's own draws, B covers A's single b by 100x: S_on[A, B] = 0.001;
    # under B's draws A never covers B. Scores (a = 0: penalty 2 S_on): A: max(0, 0.01 - 0.002) = 0.008; B: 0.
    assert selection.offset_tournament(logp, own, 4, a=0.0) == 1
    # If A's own generations held b 6 times in 1000, the penalty 2 * 0.006 cancels A's loss to B:
    # both score 0, and the tie goes to the lower cross-entropy, A.
    own[0] = log_likelihoods(two_outcome_sample(minority=6), [0.001, 0.1])
    assert selection.offset_tournament(logp, own, 4, a=0.0) == 0
    # A larger a scales the penalty: 2 * 4^0.4 * 0.001 = 0.0035 < 0.01 with one b, so B again.
    own[0] = log_likelihoods(draws[0], [0.001, 0.1])
    assert selection.offset_tournament(logp, own, 4, a=0.4) == 1


def test_ties_go_to_lower_cross_entropy_then_to_the_earlier_candidate():
    y = two_outcome_sample()
    same = log_likelihoods(y, [0.01, 0.01, 0.01])
    for rule in (selection.min_ce, lambda lp: selection.tournament(lp, 2)):
        assert rule(same) == 0
    # No candidate beats another by a factor 100 (level 100): every tournament score is 0, so CE decides.
    logp = log_likelihoods(y, [0.2, 0.01, 0.05])
    assert selection.tournament(logp, 100) == selection.min_ce(logp) == 1
    assert selection.oracle(np.array([0.9, 0.95, 0.95]), logp) == 1


def test_selection_never_reads_pi_d(monkeypatch):
    """The stage's rules run with the teacher's likelihoods unavailable; the oracle reads only the evaluation table."""

    def forbidden(*args, **kwargs):
        raise AssertionError("selection read pi_D")

    monkeypatch.setattr(Graph, "step_log_probs", forbidden)
    spec_teacher = {"name": "graph", "num_nodes": 20, "classes": {"match": 0.9, "mismatch": 0.1}}
    teacher = build_teacher(spec_teacher)
    batch = teacher.sample(24, 4, np.random.default_rng(0))
    model_spec = {"class": "transformer", "layers": 1, "heads": 1, "width": 8, "dropout": 0.0}
    states = {}
    for step in (0, 5):
        torch.manual_seed(step)
        states[step] = build_model(model_spec, Vocab.of(teacher, 4), teacher=teacher).state_dict()
    truth = pl.DataFrame(
        {
            "seed": [0] * 6,
            "step": [0, 5] * 3,
            "metric": ["pass_at_n"] * 2 + ["coverage"] * 2 + ["kl"] * 2,
            "level": [2.0, 2.0, 1.0, 1.0, None, None],
            "value": [0.3, 0.4, 0.5, 0.4, 3.0, 2.5],
        }
    )
    spec = {
        "study": "s",
        "teacher": spec_teacher,
        "model": model_spec,
        "model_name": "t",
        "horizon": 4,
        "selection": {
            "pass_at": [2],
            "level_ratio": 0.5,
            "rules": ["min_ce", "tournament", "offset_tournament", "oracle"],
            "tie_break": "ce",
            "offset_a": [0.0],
            "offset_prompts": 8,
        },
    }
    rows = selection.select_trial(spec, 0, states, batch, truth)
    assert {r["rule"] for r in rows} == {"min_ce", "tournament", "offset_tournament", "oracle"}
    assert next(r for r in rows if r["rule"] == "oracle")["step"] == 5
    assert all(r["oracle_gap"] == pytest.approx(0.4 - r["pass_at_n"]) for r in rows)


def _tournament_by_loops(logp, level):
    """The simple tournament written out: for each j, the worst fraction of samples on which some k
    beats j by a factor N; the lowest worst score wins, ties to the lower CE, then the earlier j."""
    k_count, n = len(logp), len(logp[0])
    ce = [-sum(row) / n for row in logp]
    worst = [
        max(
            sum(logp[k][i] - logp[j][i] >= math.log(level) - 1e-12 for i in range(n)) / n
            for k in range(k_count)
            if k != j
        )
        for j in range(k_count)
    ]
    return min(range(k_count), key=lambda j: (round(worst[j], 12), ce[j], j))


def test_select_trial_picks_what_an_independent_recomputation_picks():
    """Four real checkpoints of a transformer: the rows' picks equal min-CE, the tournament and the
    oracle recomputed from per-sequence log-likelihoods scored one sequence at a time, and each
    row's Pass@N, KL, coverage and gap are read from the truth table for the picked step."""
    spec_teacher = {"name": "graph", "num_nodes": 20, "classes": {"match": 0.9, "mismatch": 0.1}}
    teacher = build_teacher(spec_teacher)
    batch = teacher.sample(24, 4, np.random.default_rng(0))
    model_spec = {"class": "transformer", "layers": 1, "heads": 1, "width": 8, "dropout": 0.0}
    vocab = Vocab.of(teacher, 4)
    steps = [0, 5, 10, 15]
    states = {}
    for step in steps:
        torch.manual_seed(step)
        m = build_model(model_spec, vocab, teacher=teacher)
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 0.4)  # candidates far apart, so the tournament scores differ
        states[step] = m.state_dict()
    rng = np.random.default_rng(1)
    truth = pl.DataFrame(
        [
            {"seed": 0, "step": s, "metric": metric, "level": lv, "value": float(rng.uniform())}
            for s in steps
            for metric, lv in [
                ("pass_at_n", 4.0),
                ("pass_at_n", 8.0),
                ("coverage", 2.0),
                ("coverage", 4.0),
                ("kl", None),
            ]
        ]
    )
    spec = {
        "study": "s",
        "teacher": spec_teacher,
        "model": model_spec,
        "model_name": "t",
        "horizon": 4,
        "selection": {
            "pass_at": [4, 8],
            "level_ratio": 0.5,
            "rules": ["min_ce", "tournament", "oracle"],
            "tie_break": "ce",
            "offset_a": [0.0],
            "offset_prompts": 8,
        },
    }
    rows = selection.select_trial(spec, 0, states, batch, truth)
    scorer = build_model(model_spec, vocab, teacher=teacher)
    logp = []
    for step in steps:
        scorer.load_state_dict(states[step])
        with torch.no_grad():
            logp.append(
                [
                    float(
                        scorer.token_log_probs(
                            torch.from_numpy(batch.prompt[i : i + 1]), torch.from_numpy(batch.response[i : i + 1])
                        ).sum()
                    )
                    for i in range(len(batch))
                ]
            )
    ce = [-sum(row) / len(row) for row in logp]
    value = {(r["step"], r["metric"], r["level"]): r["value"] for r in truth.iter_rows(named=True)}
    picked = {(r["rule"], r["n"]): r for r in rows}
    assert len(rows) == 6
    tournament_picks = set()
    for n, level in [(4.0, 2.0), (8.0, 4.0)]:
        best = max(steps, key=lambda s: value[(s, "pass_at_n", n)])
        want = {
            "min_ce": steps[int(np.argmin(ce))],
            "tournament": steps[_tournament_by_loops(logp, level)],
            "oracle": best,
        }
        tournament_picks.add(want["tournament"])
        for rule, step in want.items():
            r = picked[(rule, n)]
            assert r["step"] == step, (rule, n)
            assert (r["pass_at_n"], r["kl"], r["coverage"]) == (
                value[(step, "pass_at_n", n)],
                value[(step, "kl", None)],
                value[(step, "coverage", level)],
            )
            assert r["oracle_gap"] == pytest.approx(value[(best, "pass_at_n", n)] - value[(step, "pass_at_n", n)])
            assert r["level"] == level and r["candidates"] == 4
    # The case is not degenerate: the candidates' CEs differ, and the picks are not all the oracle's.
    assert len(set(np.round(ce, 6))) == 4
    assert any(picked[(rule, n)]["oracle_gap"] > 0 for rule in ("min_ce", "tournament") for n in (4.0, 8.0))


FIG1 = {
    "execution": {"backend": "serial"},
    "studies": {
        "f1": {
            "teacher": {
                "name": "graph",
                "num_nodes": 20,
                "classes": {"match": 0.34, "mismatch": 0.33, "uniform4": 0.33},
            },
            "horizons": [4],
            "seeds": 2,
            "data": {"n_train": 200, "n_eval": 16, "shared_across_seeds": True},
            "models": {
                "transformer": {"class": "transformer", "layers": 1, "heads": 2, "width": 16},
                "mix": {"class": "rule_mixture", "finetune": {"optimizer": "adam", "lr": 0.05}},
            },
            "train": {"optimizer": "adamw", "lr": 0.003, "batch_size": 16, "steps": 20, "checkpoints": [20]},
            "finetune": {
                "teacher": {"classes": {"match": 0.9, "mismatch": 0.1}},
                "train": {"optimizer": "adamw", "lr": 0.001, "batch_size": 8, "steps": 6, "checkpoints": [2, 4, 6]},
            },
            "evaluate": {"levels": [2, 4, 6], "stopped_kl_levels": [4], "pass_at": [1, 4, 8, 12]},
            "selection": {
                "n_select": 32,
                "pass_at": [4, 8, 12],
                "offset_prompts": 8,
                "offset_a": [0, 0.05],
                "sensitivity": {"level_ratios": [0.25, 1], "tie_breaks": ["earliest"]},
            },
            "figures": ["finetune"],
        }
    },
}


@pytest.mark.workflow
def test_fig1_study_end_to_end_and_finetune_changes_never_rerun_pretraining(tmp_path):
    mini_config_writer(tmp_path, FIG1)
    snakemake(tmp_path)
    out = tmp_path / "results" / "f1"
    m = pl.read_parquet(out / "metrics.parquet")
    assert sorted(m["step"].unique()) == [0, 2, 4, 6]  # step 0 is the pre-trained model
    assert set(m["class"]) == {"all", "match", "mismatch"}  # evaluated on the fine-tuning mixture
    mass = m.filter(pl.col("metric") == "valid_mass")["value"]
    assert ((mass > 0) & (mass <= 1 + 1e-9)).all()
    logs = pl.read_parquet(out / "train_log.parquet")  # pre-training and fine-tuning steps, apart
    assert logs.group_by("stage").agg(pl.col("step").unique().sort()).sort("stage").rows() == [
        ("finetune", [0, 2, 4, 6]),
        ("train", [20]),
    ]
    sel = pl.read_parquet(out / "selection.parquet")
    # models x seeds x N x (min_ce, oracle, tournament at 3 ratios x 2 ties, offset at 2 a x 3 ratios x 2 ties)
    assert sel.height == 2 * 2 * 3 * (2 + 6 + 12)
    assert sel.filter(pl.col("headline")).height == 2 * 2 * 3 * 4  # one row per rule
    oracle = sel.filter(pl.col("rule") == "oracle")
    assert (oracle["oracle_gap"] == 0).all() and (sel["oracle_gap"] >= -1e-12).all()
    offset = sel.filter(pl.col("rule") == "offset_tournament")
    # Thm 6.4 needs a > 0 and level^(1 - 2a) >= 8: with a = 0.05, level >= 10.1, here only 12 (N = 12, ratio 1)
    assert offset.filter(pl.col("in_theorem"))["offset_a"].unique().to_list() == [0.05]
    assert set(offset.filter(pl.col("in_theorem"))["level"]) == {12.0}
    # the rule_mixture's weights moved towards the fine-tuning mixture (0.9, 0.1, 0): Pass@4 of G_2 fell
    mix = m.filter(
        (pl.col("model") == "mix")
        & (pl.col("class") == "mismatch")
        & (pl.col("metric") == "pass_at_n")
        & (pl.col("level") == 4.0)
    )
    assert mix.filter(pl.col("step") == 6)["value"].max() < mix.filter(pl.col("step") == 0)["value"].min()
    for name in ("fig1_training.png", "fig1_scatter.png"):
        assert (out / "figures" / name).read_bytes()[:4] == b"\x89PNG"
    assert "| transformer | 8 | tournament |" in (out / "figures" / "selection.md").read_text()
    assert "| mix | 8 | tournament |" in (out / "figures" / "selection.md").read_text()
    assert "**level 0.5N, ties: ce**" in (out / "figures" / "selection_sensitivity.md").read_text()
    assert "rho(-Cov_{N/2}, Pass@N)" in (out / "figures" / "rank_correlations.md").read_text()
    assert "| transformer | 0 | mismatch |" in (out / "figures" / "pretrain_check.md").read_text()
    # A fine-tuning setting reruns fine-tuning and what follows, never the data or pre-training.
    changed = {**FIG1, "studies": {"f1": {**FIG1["studies"]["f1"]}}}
    changed["studies"]["f1"]["finetune"] = {
        **FIG1["studies"]["f1"]["finetune"],
        "train": {**FIG1["studies"]["f1"]["finetune"]["train"], "lr": 0.002},
    }
    mini_config_writer(tmp_path, changed)
    jobs = planned_jobs(tmp_path)
    assert jobs.get("finetune") == 1 and jobs.get("select") == 1
    assert "train" not in jobs and "data" not in jobs and "select_data" not in jobs


def test_at_level_one_a_candidate_is_never_its_own_rival():
    # Level N = 1 (e.g. N = 4 at level ratio 1/4): k covers j on a sample where pi_k >= pi_j.
    # With the diagonal counted every score would be 1 and the tournament void (CE would decide).
    y = two_outcome_sample()
    logp = log_likelihoods(y, [0.001, 0.1, 0.05])  # P(b) of three candidates
    cover = selection.cover_matrix(logp, 1.0)
    assert np.all(np.diag(cover) == 0)
    # B (0.1) is beaten only on a's (0.99 of samples) by A and C; C by A on a's and by B on b's.
    assert cover == pytest.approx(np.array([[0, 0.01, 0.01], [0.99, 0, 0.99], [0.99, 0.01, 0]]))
    assert selection.tournament(logp, 1.0) == 0 == selection.min_ce(logp)
    own = np.stack([logp, logp, logp])
    assert np.all(np.diag(selection.on_policy_cover(own, 1.0)) == 0)
