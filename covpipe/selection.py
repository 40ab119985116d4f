"""Checkpoint (or any candidate-model) selection: paper Sec. 6.3, paper-notes Sec. 4.3.

The rules read the candidates' log-likelihoods of held-out samples y_i ~ pi_D(.|x_i), never pi_D:
    min_ce             argmin_j of the mean of -log pi_j(y_i|x_i): held-out cross-entropy, what
                       practitioners do (MLE over the candidate set).
    tournament         the simple tournament (arXiv Eq. 29 / ICLR Eq. 14):
                           S[j, k] = (1/n) #{i : log pi_k(y_i|x_i) - log pi_j(y_i|x_i) >= log N}
                           pick argmin_j max_k S[j, k]
    offset_tournament  the on-policy variant (arXiv Eq. 32 / ICLR Eq. 39):
                           argmin_j max_k { S[j, k] - 2 N^a S_on[j, k] },
                           S_on[j, k] = (1/n) sum_i P_{y ~ pi_j(.|x_i)}[log pi_k(y) - log pi_j(y) >= log N],
                       estimated with one sample of pi_j per held-out prompt.
    oracle             the candidate with the best true Pass@N (reference only: it reads pi_D).
Ties (common: S takes values in multiples of 1/n) go to the lower held-out cross-entropy, then
to the earlier candidate, so every rule is deterministic and the tournaments never pick a
candidate that min_ce would reject among equals.

`run` is the select stage of one (study, model, horizon): per seed, the candidates are every
saved checkpoint; the output table holds, for each rule, N and seed, the chosen step and its
true Pass@N, KL and Cov at the tournament level (from the evaluation table), and the gap to the oracle.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import polars as pl
import torch

from . import io
from .models import Vocab, build_model
from .models.base import as_tensor
from .evaluate import sequence_log_probs
from .seeding import derive_seed
from .teachers import build_teacher

VERSION = 1
log = logging.getLogger(__name__)


def cross_entropies(logp: np.ndarray) -> np.ndarray:
    """Held-out cross-entropy of each candidate: logp (K, n) nats per sequence -> (K,) nats."""
    return -np.asarray(logp, dtype=np.float64).mean(axis=1)


def _argmin(scores: np.ndarray, logp: np.ndarray) -> int:
    """Lowest score; ties to the lower held-out CE, then to the lower index."""
    scores = np.asarray(scores, dtype=np.float64)
    tied = np.flatnonzero(np.isclose(scores, scores.min(), rtol=0, atol=1e-12))
    ce = cross_entropies(logp)[tied]
    return int(tied[np.lexsort((tied, ce))[0]])


def min_ce(logp: np.ndarray) -> int:
    """Index of the candidate with the lowest held-out cross-entropy. logp: (K, n) nats."""
    return _argmin(cross_entropies(logp), logp)


def cover_matrix(logp: np.ndarray, level: float) -> np.ndarray:
    """S[j, k] = fraction of samples with log pi_k - log pi_j >= log N: (K, K); S[j, j] = 0 for N > 1."""
    logp = np.asarray(logp, dtype=np.float64)
    diff = logp[None, :, :] - logp[:, None, :]  # [j, k, i] = log pi_k(y_i) - log pi_j(y_i)
    return (diff >= math.log(level) - 1e-12).mean(axis=2)


def tournament(logp: np.ndarray, level: float) -> int:
    """The simple tournament at level N (Eq. 29): argmin_j max_k S[j, k]. logp: (K, n) nats."""
    return _argmin(cover_matrix(logp, level).max(axis=1), logp)


def offset_tournament(logp: np.ndarray, own: np.ndarray, level: float, a: float = 0.0) -> int:
    """The offset tournament at level N (Eq. 32).

    logp: (K, n) candidates' log-likelihoods of held-out y_i ~ pi_D.
    own: (K, K, m) with own[j, k, i] = log pi_k(z_ji) for z_ji ~ pi_j(.|x_i), m held-out prompts.
    """
    own = np.asarray(own, dtype=np.float64)
    k = own.shape[0]
    diag = own[np.arange(k), np.arange(k)]  # (K, m): log pi_j(z_ji)
    on_policy = (own - diag[:, None, :] >= math.log(level) - 1e-12).mean(axis=2)  # [j, k]
    return _argmin((cover_matrix(logp, level) - 2 * level**a * on_policy).max(axis=1), logp)


def oracle(true_pass: np.ndarray, logp: np.ndarray) -> int:
    """The candidate with the highest true Pass@N (ties as above). true_pass: (K,)."""
    return _argmin(-np.asarray(true_pass, dtype=np.float64), logp)


# ---- the stage ----------------------------------------------------------------------------------


def select_spec(evaluate_spec: dict, selection: dict) -> dict:
    return {**evaluate_spec, "selection": selection, "selection_version": VERSION}


def candidate_log_likelihoods(model, states: dict, prompt, response) -> np.ndarray:
    """log pi_j(y_i|x_i) for every candidate state, in step order: float64 (K, n), nats per sequence."""
    out = []
    for _, state in sorted(states.items()):
        model.load_state_dict(state)
        out.append(sequence_log_probs(model, prompt, response))
    return np.stack(out)


def on_policy_log_likelihoods(model, states: dict, prompt, length: int, generator: torch.Generator) -> np.ndarray:
    """own[j, k, i] = log pi_k(z_ji | x_i) with z_ji ~ pi_j(.|x_i): float64 (K, K, m)."""
    prompt = as_tensor(prompt)
    steps = sorted(states)
    own = []
    for step in steps:
        model.load_state_dict(states[step])
        draws = model.sample(prompt, length, generator)
        own.append(candidate_log_likelihoods(model, states, prompt, draws))
    return np.stack(own)


def select_trial(spec: dict, seed: int, states: dict, batch, truth: pl.DataFrame) -> list[dict]:
    """Every rule at every N for one seed's checkpoints; rows of the selection table."""
    sel = spec["selection"]
    teacher = build_teacher(spec["teacher"])
    model = build_model(spec["model"], Vocab.of(teacher, spec["horizon"]), teacher=teacher)
    steps = sorted(states)
    logp = candidate_log_likelihoods(model, states, batch.prompt, batch.response)
    own = None
    if "offset_tournament" in sel["rules"]:
        gen = torch.Generator().manual_seed(derive_seed(spec["study"], "offset-samples", spec["model_name"],
                                                        spec["horizon"], seed))
        m = min(sel["offset_prompts"], len(batch))
        own = on_policy_log_likelihoods(model, states, batch.prompt[:m], batch.response.shape[1], gen)
    rows = []
    for n in sel["pass_at"]:
        level = n * sel["level_ratio"]
        at = truth.filter(pl.col("seed") == seed)
        true = {m: dict(zip(*at.filter((pl.col("metric") == m) & (pl.col("level") == lv))
                            .select("step", "value").get_columns()))
                for m, lv in (("pass_at_n", float(n)), ("coverage", float(level)))}
        kl = dict(zip(*at.filter(pl.col("metric") == "kl").select("step", "value").get_columns()))
        true_pass = np.array([true["pass_at_n"][s] for s in steps])
        picks = {"min_ce": lambda: min_ce(logp),
                 "tournament": lambda: tournament(logp, level),
                 "offset_tournament": lambda: offset_tournament(logp, own, level, sel["offset_a"]),
                 "oracle": lambda: oracle(true_pass, logp)}
        best = float(true_pass.max())
        for rule in sel["rules"]:
            step = steps[picks[rule]()]
            rows.append({"seed": seed, "rule": rule, "n": float(n), "level": float(level), "step": step,
                         "pass_at_n": true["pass_at_n"][step], "kl": kl[step], "coverage": true["coverage"][step],
                         "oracle_gap": best - true["pass_at_n"][step], "candidates": len(steps)})
    return rows


def run(select_path, checkpoints_path, metrics_path, out_path, spec: dict) -> None:
    """The select stage for one (study, model, horizon): every seed's checkpoints are the candidates."""
    batch = io.frame_tokens(io.read_parquet(select_path))
    ckpt = io.load_torch(checkpoints_path)
    metrics = io.read_parquet(metrics_path).filter(pl.col("class") == "all")
    rows = []
    for seed in sorted(ckpt["trials"]):
        rows += select_trial(spec, seed, ckpt["trials"][seed], batch, metrics)
    const = dict(study=spec["study"], model=spec["model_name"], horizon=spec["horizon"])
    table = pl.DataFrame([{**const, **r} for r in rows])
    io.write_parquet(table, out_path)
    io.write_provenance(out_path, spec)
    for r in table.filter(pl.col("seed") == 0).iter_rows(named=True):
        log.info("seed 0, N=%g: %s picks step %d (Pass@N %.4f, gap to oracle %.4f)", r["n"], r["rule"], r["step"],
                 r["pass_at_n"], r["oracle_gap"])
