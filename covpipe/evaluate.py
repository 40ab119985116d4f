"""The evaluate stage: exact metrics of every checkpoint on the held-out set, by teacher forcing.

For each (seed, checkpoint) and each held-out (x, y ~ pi_D):
    log_ratio = log pi_D(y|x) - log pi_hat(y|x)      (nats, summed over the H tokens)
kept in log_ratios.parquet, so any coverage level N can be recomputed without a model.
metrics.parquet is long-format: one row per (seed, step, class, metric, level) with value and
a 95% interval (Wilson for coverage, normal for means). Class "all" is the mixture: rows
reweighted by class weight / class count.

Metrics: kl, ce (nats/sequence), prefix_kl (the same KL as the mean over held-out sequences of
sum_h KL(pi_D(.|x, y_<h) || pi_hat(.|x, y_<h)), exact per prefix: >= 0 and of lower variance), entropy (of pi_D, for reference), sigma_star_sq (the inherent
variance of pi_D, paper Eq. 8, for teachers that compute it), coverage (Cov_N at each
level), stopped_kl (E[min(log N, sum_h KL_h)] at each stopped level), token_accuracy (fraction
of positions where the model's most likely token is y_h), and for teachers that define correct
responses (the graph task) pass_at_n: Pass@N = E_x[1 - (1 - p_correct(x))^N], with p_correct
the model's exact total probability of the correct responses, by teacher forcing. For Fig. 1
graphs (2 branching layers, the model's probabilities of all 4 valid paths, q): valid_mass (sum of
q: probability of a valid path), branch_agreement (share of the valid mass on paths that take the
same parity rule at both branching layers; 1/2 for independent fair choices, 5/6 for the ideal
pre-trained model, 1 for a consistent one) and first_branch_match (share on the match rule at the
first branching layer: 1/2 when the class is invisible and the mixture is balanced).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import polars as pl
import torch

from . import io, metrics
from .distribute import Execution
from .models import Vocab, build_model
from .models.base import as_tensor
from .models.scoring import model_step_log_probs, sequence_log_probs
from .teachers import build_teacher

log = logging.getLogger(__name__)

METRICS_SCHEMA = {
    "study": pl.String,
    "teacher": pl.String,
    "model": pl.String,
    "horizon": pl.Int64,
    "seed": pl.Int64,
    "step": pl.Int64,
    "class": pl.String,
    "metric": pl.String,
    "level": pl.Float64,
    "value": pl.Float64,
    "low": pl.Float64,
    "high": pl.Float64,
    "n": pl.Int64,
}


def class_weights(cls: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-row weights that make a class-stratified sample represent the mixture: w_c / n_c."""
    counts = np.bincount(cls, minlength=len(weights)).astype(np.float64)
    return weights[cls] / np.maximum(counts[cls], 1)


def evaluate_trial(
    spec: dict,
    seed: int,
    states: dict,
    batch,
    teacher_steps: np.ndarray,
    correct=None,
    device: str = "cpu",
    paths=None,
    learner: dict | None = None,
    sigma_terms=None,
) -> tuple[list, dict]:
    """All checkpoints of one seed: (metric rows, {(model, step): (log_ratios, model_logp)}).

    correct: None, or (owner (k,), responses (k, L)): every correct response and its prompt's row.
    paths: None, or the Fig. 1 valid paths (n, 4, L) of `Graph.branch_choice_paths`.
    learner: {step: resolved hyperparameters} of a learner-trained seed; its decoders (TTT for
    token_sgd) are evaluated as models of their own, named '<model>+ttt'.
    sigma_terms: None, or per-sequence sigma*^2 terms of pi_D on the held-out set (n,), reported
    as metric sigma_star_sq (a property of the teacher, like entropy).
    """
    teacher = build_teacher(spec["teacher"])
    model = build_model(spec["model"], Vocab.of(teacher, spec["horizon"]), teacher=teacher)
    prompt, response = as_tensor(batch.prompt), as_tensor(batch.response)
    if model.trainable and device != "cpu":
        model, prompt, response = model.to(device), prompt.to(device), response.to(device)
    teacher_tok = np.take_along_axis(teacher_steps, batch.response[..., None], axis=-1)[..., 0]  # (n, H)
    teacher_logp = teacher_tok.sum(1)
    teacher_probs = np.exp(teacher_steps)
    groups = {"all": class_weights(batch.cls, teacher.class_weights)}
    if len(teacher.class_names) > 1:
        groups.update({name: (batch.cls == c).astype(np.float64) for c, name in enumerate(teacher.class_names)})
    rows, kept = [], {}
    for step, state in sorted(states.items()):
        model.load_state_dict(state)
        for name, decoder in [(spec["model_name"], model), *_variants(spec, model, (learner or {}).get(step))]:
            steps = model_step_log_probs(decoder, prompt, response)  # (n, H, V)
            model_logp = np.take_along_axis(steps, batch.response[..., None], axis=-1)[..., 0].sum(1)
            log_ratios = teacher_logp - model_logp  # (n,), nats
            accuracy = (steps.argmax(-1) == batch.response).mean(1)  # (n,)
            p_correct = None if correct is None else _p_correct(decoder, batch, *correct)
            branches = None if paths is None else _branch_diagnostics(decoder, batch, paths)
            with np.errstate(invalid="ignore"):  # 0 * log 0 terms where pi_D puts no mass
                token_kls = np.nansum(teacher_probs * (teacher_steps - steps), axis=-1)  # (n, H)
            per_seq = {
                "log_ratios": log_ratios,
                "model_logp": model_logp,
                "teacher_logp": teacher_logp,
                "token_kls": token_kls,
                "p_correct": p_correct,
                "token_accuracy": accuracy,
                **(branches or {}),
                "sigma_star_sq": sigma_terms,
            }
            for group, w in groups.items():
                rows += [{**row, "model": name} for row in _metric_rows(spec, seed, step, group, w, per_seq)]
            kept[(name, step)] = (log_ratios, model_logp)
    return rows, kept


def _variants(spec, model, info) -> list:
    """Decoders evaluated beside a learner-trained model (covpipe.learners.fitting.variants): [(name, model)]."""
    if not (spec["train"] or {}).get("learner"):
        return []
    from .learners.fitting import variants

    return variants(spec, model, info)


def _p_correct(model, batch, owner, responses) -> np.ndarray:
    """The model's total probability of each prompt's correct responses: (n,)."""
    p = np.exp(sequence_log_probs(model, batch.prompt[owner], responses))
    return np.minimum(np.bincount(owner, weights=p, minlength=len(batch)), 1.0)


def _branch_diagnostics(model, batch, paths) -> dict:
    """valid_mass, branch_agreement, first_branch_match per prompt (see the module doc): {name: (n,)}."""
    n, k, length = paths.shape
    q = np.exp(sequence_log_probs(model, np.repeat(batch.prompt, k, axis=0), paths.reshape(n * k, length)))
    q = q.reshape(n, k)  # [mm, mx, xm, xx]
    mass = q.sum(1)
    safe = np.maximum(mass, 1e-300)
    return {
        "valid_mass": mass,
        "branch_agreement": (q[:, 0] + q[:, 3]) / safe,
        "first_branch_match": (q[:, 0] + q[:, 1]) / safe,
    }


def pass_at_n_sampled(model, batch, correct: list, k: int, ns, generator: torch.Generator) -> np.ndarray:
    """Pass@N by sampling, for comparison with the exact route: draw k responses per prompt from
    the model, verify each against the prompt's correct responses, average the unbiased
    estimator 1 - C(k - c, N) / C(k, N) over prompts. Returns float64 (len(ns),)."""
    prompt = torch.from_numpy(np.repeat(batch.prompt, k, axis=0))
    draws = model.sample(prompt, batch.response.shape[1], generator).numpy().reshape(len(batch), k, -1)
    hits = [int((d[:, None, :] == c[None]).all(-1).any(-1).sum()) for d, c in zip(draws, correct)]
    return np.array([np.mean([metrics.pass_at_k_unbiased(k, h, int(n)) for h in hits]) for n in ns])


# per-sequence values reported as their weighted mean, in this order (the middle three: `_branch_diagnostics`)
PLAIN_MEANS = ("token_accuracy", "valid_mass", "branch_agreement", "first_branch_match", "sigma_star_sq")


def _metric_rows(spec, seed, step, group, w, per_seq: dict) -> list[dict]:
    """The metric rows of one (seed, step, class group) from per-sequence values, every one computed
    by a `covpipe.metrics` function.

    w: float64 (n,), the group's row weights (0 outside it). per_seq: {name: array over the held-out
    sequences}: log_ratios, model_logp, teacher_logp (n,) nats; token_kls (n, H) nats; p_correct
    (n,) or None; and the PLAIN_MEANS it has, (n,) (None where not computed).
    """
    mask = w > 0
    w = w[mask]
    seqs = {name: v[mask] for name, v in per_seq.items() if v is not None}
    x, lp, tlp, tk = seqs["log_ratios"], seqs["model_logp"], seqs["teacher_logp"], seqs["token_kls"]
    prefix = tk.sum(1)
    n_eff = metrics.effective_sample_size(w)
    key = dict(seed=seed, step=step, **{"class": group}, n=int(mask.sum()))
    out = []
    # prefix_kl: the same expectation as kl by the chain rule, sum_h KL(pi_D(.|prefix) || pi_hat(.|prefix))
    # per held-out sequence; never negative and of far lower variance where pi_hat is close to pi_D
    means = [  # (metric, its value, the per-sequence values it is the weighted mean of)
        ("kl", metrics.kl_divergence(x, w), x),
        ("prefix_kl", metrics.weighted_mean(prefix, w), prefix),
        ("ce", metrics.cross_entropy(lp, w), -lp),
        ("entropy", metrics.cross_entropy(tlp, w), -tlp),  # of pi_D: its cross-entropy with itself
    ]
    means += [(name, metrics.weighted_mean(seqs[name], w), seqs[name]) for name in PLAIN_MEANS if name in seqs]
    for name, value, values in means:
        low, high = metrics.mean_interval(values, w)
        out.append({**key, "metric": name, "level": None, "value": value, "low": low, "high": high})
    levels = spec["evaluate"]["levels"]
    cov = metrics.coverage_profile(x, levels, w)
    low, high = metrics.wilson_interval(cov, n_eff)
    out += [
        {**key, "metric": "coverage", "level": float(n), "value": float(c), "low": float(lo), "high": float(hi)}
        for n, c, lo, hi in zip(levels, cov, low, high)
    ]
    out += [
        {
            **key,
            "metric": "stopped_kl",
            "level": float(n),
            "value": metrics.stopped_kl(tk, n, w),
            "low": None,
            "high": None,
        }
        for n in spec["evaluate"]["stopped_kl_levels"]
    ]
    if "p_correct" in seqs:
        ns = spec["evaluate"]["pass_at"]
        out += [
            {**key, "metric": "pass_at_n", "level": float(n), "value": float(v), "low": None, "high": None}
            for n, v in zip(ns, metrics.pass_at_n_exact(seqs["p_correct"], ns, w))
        ]
    return out


def run(eval_path, checkpoints_path, metrics_path, log_ratios_path, spec: dict, **execution) -> None:
    """The evaluate stage for one (study, model, horizon): every seed and checkpoint.
    `execution`: threads, backend, address, device (covpipe.distribute.Execution)."""
    started = time.perf_counter()
    teacher = build_teacher(spec["teacher"])
    batch, data = io.read_tokens(
        eval_path,
        Vocab.of(teacher, spec["horizon"]),
        extra=("teacher_logp",),
        made_for={"study": spec["study"], "horizon": spec["horizon"]},
    )
    ckpt = io.load_torch(checkpoints_path)
    fit = {k: v for k, v in spec.items() if k not in ("evaluate", "evaluate_code")}
    io.check_made_for(checkpoints_path, ckpt.get("spec") or {}, fit, "checkpoint")
    teacher_steps = teacher.step_log_probs(batch.prompt, batch.response)  # (n, H, V)
    stored = data["teacher_logp"].to_numpy()
    recomputed = np.take_along_axis(teacher_steps, batch.response[..., None], axis=-1)[..., 0].sum(1)
    if not np.allclose(stored, recomputed, rtol=0, atol=1e-6):
        raise ValueError(
            f"{eval_path}: teacher log-likelihoods do not match the configured teacher; rerun the data stage"
        )
    correct = None
    if hasattr(teacher, "correct_responses"):
        per_prompt = teacher.correct_responses(batch.prompt, batch.cls)
        correct = (np.repeat(np.arange(len(batch)), [len(r) for r in per_prompt]), np.concatenate(per_prompt))
    paths = teacher.branch_choice_paths(batch.prompt) if hasattr(teacher, "branch_choice_paths") else None
    seeds = sorted(ckpt["trials"])
    sigma_terms = None
    if hasattr(teacher, "inherent_variance"):  # sigma*^2 (paper Eq. 8) per held-out sequence
        sigma_terms = teacher.inherent_variance(batch.prompt, batch.response).sum(1)
    learner = ckpt.get("learner", {})
    ex = Execution(**execution).resolved(len(seeds))
    trials = [
        (spec, s, ckpt["trials"][s], batch, teacher_steps, correct, ex.device, paths, learner.get(s), sigma_terms)
        for s in seeds
    ]
    results = ex.run_seeds(evaluate_trial, trials, spec, seeds)
    const = dict(
        study=spec["study"], teacher=spec["teacher"]["name"], model=spec["model_name"], horizon=spec["horizon"]
    )
    table = pl.DataFrame([{**const, **row} for rows, _ in results for row in rows], schema=METRICS_SCHEMA)
    io.write_parquet(table, metrics_path, spec, "evaluate")
    n = len(batch)
    ratio_parts = [
        pl.DataFrame(
            {
                "seed": np.full(n, s),
                "step": np.full(n, step),
                "index": np.arange(n),
                "cls": batch.cls,
                "log_ratio": lr,
                "model_logp": lp,
                "model": model,
            }
        )
        for s, (_, kept) in zip(seeds, results)
        for (model, step), (lr, lp) in kept.items()
    ]
    io.write_parquet(
        pl.concat(ratio_parts).with_columns(**{k: pl.lit(v) for k, v in const.items() if k != "model"}),
        log_ratios_path,
        spec,
        "evaluate",
    )
    io.write_provenance(
        metrics_path, spec, backend=ex.backend, threads=ex.threads, wall_seconds=time.perf_counter() - started
    )
    final = table.filter(
        (pl.col("class") == "all")
        & (pl.col("metric") == "kl")
        & (pl.col("step") == table["step"].max())
        & (pl.col("model") == spec["model_name"])
    )
    log.info(
        "evaluate %s/%s H=%d: final KL %s nats",
        spec["study"],
        spec["model_name"],
        spec["horizon"],
        ", ".join(f"{v:.3f}" for v in final["value"]),
    )
