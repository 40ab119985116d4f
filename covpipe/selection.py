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
Ties (common: S takes values in multiples of 1/n, and a model whose probabilities do not depend
on the prompt ties in large blocks) are broken by `tie_break`: "ce", the lower held-out
cross-entropy, then the earlier candidate; or "earliest", the earlier candidate (here: the
earlier checkpoint). Every rule is deterministic either way.

`run` is the select stage of one (study, model, horizon): per seed, the candidates are every
saved checkpoint; the output table holds, for each rule, N, seed and setting (level ratio, tie
break, offset a), the chosen step and its true Pass@N, KL and Cov at the rule's level (from the
evaluation table), the gap to the oracle, and whether the row is the study's headline setting
(`headline`) and, for the offset tournament, whether Thm 6.4's conditions hold (`in_theorem`:
a > 0 and level^(1 - 2a) >= 8).
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
from .models.scoring import sequence_log_probs
from .seeding import derive_seed
from .teachers import build_teacher

SCHEMA = {
    "level_ratio": pl.Float64,
    "tie_break": pl.String,
    "offset_a": pl.Float64,
    "coverage": pl.Float64,
    "in_theorem": pl.Boolean,
    "headline": pl.Boolean,
}
log = logging.getLogger(__name__)


def cross_entropies(logp: np.ndarray) -> np.ndarray:
    """Held-out cross-entropy of each candidate: logp (K, n) nats per sequence -> (K,) nats."""
    return -np.asarray(logp, dtype=np.float64).mean(axis=1)


TIE_BREAKS = ("ce", "earliest")


def _argmin(scores: np.ndarray, logp: np.ndarray, tie_break: str = "ce") -> int:
    """Lowest score; ties to the lower held-out CE, then the lower index ("ce"), or to the lower index."""
    scores = np.asarray(scores, dtype=np.float64)
    tied = np.flatnonzero(np.isclose(scores, scores.min(), rtol=0, atol=1e-12))
    if tie_break == "earliest":
        return int(tied[0])
    if tie_break != "ce":
        raise ValueError(f"tie_break: expected one of {TIE_BREAKS}, got {tie_break!r}")
    ce = cross_entropies(logp)[tied]
    return int(tied[np.lexsort((tied, ce))[0]])


def min_ce(logp: np.ndarray) -> int:
    """Index of the candidate with the lowest held-out cross-entropy. logp: (K, n) nats."""
    return _argmin(cross_entropies(logp), logp)


def cover_matrix(logp: np.ndarray, level: float) -> np.ndarray:
    """S[j, k] = fraction of samples with log pi_k - log pi_j >= log N: (K, K), and S[j, j] = 0.

    The diagonal is 0 for every N > 1 anyway; at N = 1 a candidate would "cover" itself on
    every sample (every score 1, the tournament void), so rivals are the other candidates only.
    """
    logp = np.asarray(logp, dtype=np.float64)
    diff = logp[None, :, :] - logp[:, None, :]  # [j, k, i] = log pi_k(y_i) - log pi_j(y_i)
    cover = (diff >= math.log(level) - 1e-12).mean(axis=2)
    np.fill_diagonal(cover, 0.0)
    return cover


def tournament(logp: np.ndarray, level: float, tie_break: str = "ce") -> int:
    """The simple tournament at level N (Eq. 29): argmin_j max_k S[j, k]. logp: (K, n) nats."""
    return _argmin(cover_matrix(logp, level).max(axis=1), logp, tie_break)


def on_policy_cover(own: np.ndarray, level: float) -> np.ndarray:
    """S_on[j, k] = fraction of pi_j's own generations z with log pi_k(z) - log pi_j(z) >= log N: (K, K).

    own: (K, K, m) with own[j, k, i] = log pi_k(z_ji) for z_ji ~ pi_j(.|x_i), m held-out prompts.
    """
    own = np.asarray(own, dtype=np.float64)
    k = own.shape[0]
    diag = own[np.arange(k), np.arange(k)]  # (K, m): log pi_j(z_ji)
    cover = (own - diag[:, None, :] >= math.log(level) - 1e-12).mean(axis=2)
    np.fill_diagonal(cover, 0.0)  # as in cover_matrix: no candidate is its own rival
    return cover


def offset_tournament(logp: np.ndarray, own: np.ndarray, level: float, a: float = 0.0, tie_break: str = "ce") -> int:
    """The offset tournament at level N (Eq. 32): argmin_j max_k {S[j, k] - 2 N^a S_on[j, k]}.

    logp: (K, n) candidates' log-likelihoods of held-out y_i ~ pi_D; own: as in `on_policy_cover`.
    """
    return _argmin(
        (cover_matrix(logp, level) - 2 * level**a * on_policy_cover(own, level)).max(axis=1), logp, tie_break
    )


def offset_in_theorem(level: float, a: float) -> bool:
    """Whether Thm 6.4 (arXiv form) covers the offset tournament at this level: a > 0, N^(1-2a) >= 8."""
    return a > 0 and level ** (1 - 2 * a) >= 8


def oracle(true_pass: np.ndarray, logp: np.ndarray) -> int:
    """The candidate with the highest true Pass@N (ties as above). true_pass: (K,)."""
    return _argmin(-np.asarray(true_pass, dtype=np.float64), logp)


# ---- the stage ----------------------------------------------------------------------------------


def candidate_log_likelihoods(model, states: dict, prompt, response) -> np.ndarray:
    """log pi_j(y_i|x_i) for every candidate state, in step order: float64 (K, n), nats per sequence."""
    out = []
    for _, state in sorted(states.items()):
        model.load_state_dict(state)
        out.append(sequence_log_probs(model, prompt, response))
    return np.stack(out)


def on_policy_log_likelihoods(model, states: dict, prompt, length: int, generator: torch.Generator) -> np.ndarray:
    """own[j, k, i] = log pi_k(z_ji | x_i) with z_ji ~ pi_j(.|x_i): float64 (K, K, m)."""
    prompt = as_tensor(prompt).to(_device_of(model))
    steps = sorted(states)
    own = []
    for step in steps:
        model.load_state_dict(states[step])
        draws = model.sample(prompt, length, generator)
        own.append(candidate_log_likelihoods(model, states, prompt, draws))
    return np.stack(own)


def _device_of(model) -> torch.device:
    return next(iter(model.state_dict().values()), torch.empty(0)).device


def select_trial(spec: dict, seed: int, states: dict, batch, truth: pl.DataFrame, device: str = "cpu") -> list[dict]:
    """Every rule at every N for one seed's checkpoints; rows of the selection table.

    device: where a gradient-trained model scores and samples (an execution setting: the draws
    come from a CPU generator, so the picks do not depend on it beyond float rounding).
    """
    sel = spec["selection"]
    teacher = build_teacher(spec["teacher"])
    model = build_model(spec["model"], Vocab.of(teacher, spec["horizon"]), teacher=teacher)
    if model.trainable and device != "cpu":
        model = model.to(device)
    steps = sorted(states)
    logp = candidate_log_likelihoods(model, states, batch.prompt, batch.response)
    own = None
    if "offset_tournament" in sel["rules"]:
        gen = torch.Generator().manual_seed(
            derive_seed(spec["study"], "offset-samples", spec["model_name"], spec["horizon"], seed)
        )
        m = min(sel["offset_prompts"], len(batch))
        own = on_policy_log_likelihoods(model, states, batch.prompt[:m], batch.response.shape[1], gen)
    at = truth.filter(pl.col("seed") == seed)
    kl = dict(zip(*at.filter(pl.col("metric") == "kl").select("step", "value").get_columns()))

    def truth_at(metric, level):
        rows = at.filter((pl.col("metric") == metric) & (pl.col("level") == float(level)))
        return dict(zip(*rows.select("step", "value").get_columns()))

    rows = []
    for n in sel["pass_at"]:
        true_pass = truth_at("pass_at_n", n)
        passes = np.array([true_pass[s] for s in steps])
        best = float(passes.max())
        for setting in selection_settings(sel):
            level = n * setting["level_ratio"]
            rule, tie, a = setting["rule"], setting["tie_break"], setting["offset_a"]
            pick = {
                "min_ce": lambda: min_ce(logp),
                "tournament": lambda: tournament(logp, level, tie),
                "offset_tournament": lambda: offset_tournament(logp, own, level, a, tie),
                "oracle": lambda: oracle(passes, logp),
            }[rule]()
            step = steps[pick]
            rows.append(
                {
                    "seed": seed,
                    **setting,
                    "n": float(n),
                    "level": float(level),
                    "step": step,
                    "pass_at_n": true_pass[step],
                    "kl": kl[step],
                    "coverage": truth_at("coverage", level).get(step),
                    "oracle_gap": best - true_pass[step],
                    "candidates": len(steps),
                    "in_theorem": offset_in_theorem(level, a) if rule == "offset_tournament" else None,
                }
            )
    return rows


def selection_settings(sel: dict) -> list[dict]:
    """Every (rule, level ratio, tie break, offset a) the stage runs, each marked `headline` or not.

    The headline setting is the study's `level_ratio` and `tie_break` (and the first `offset_a`);
    the tournaments are also run at every `sensitivity` level ratio and tie break, the offset
    tournament at every listed a. min_ce and the oracle have no level: one row, headline.
    """
    ratio, tie, a0 = sel["level_ratio"], sel["tie_break"], sel["offset_a"][0]
    sens = sel.get("sensitivity") or {}
    ratios = sorted({ratio, *sens.get("level_ratios", [])})
    ties = [tie, *[t for t in sens.get("tie_breaks", []) if t != tie]]
    out = []
    for rule in sel["rules"]:
        if rule in ("min_ce", "oracle"):
            out.append({"rule": rule, "level_ratio": ratio, "tie_break": tie, "offset_a": None, "headline": True})
            continue
        for a in sel["offset_a"] if rule == "offset_tournament" else [None]:
            out += [
                {
                    "rule": rule,
                    "level_ratio": r,
                    "tie_break": t,
                    "offset_a": a,
                    "headline": r == ratio and t == tie and a in (None, a0),
                }
                for r in ratios
                for t in ties
            ]
    return out


def run(select_path, checkpoints_path, metrics_path, out_path, spec: dict, *, device: str = "cpu") -> None:
    """The select stage for one (study, model, horizon): every seed's checkpoints are the candidates."""
    batch = io.frame_to_batch(io.read_parquet(select_path))
    ckpt = io.load_torch(checkpoints_path)
    metrics = io.read_parquet(metrics_path).filter(pl.col("class") == "all")
    rows = []
    for seed in sorted(ckpt["trials"]):
        rows += select_trial(spec, seed, ckpt["trials"][seed], batch, metrics, device=device)
    const = dict(study=spec["study"], model=spec["model_name"], horizon=spec["horizon"])
    table = pl.DataFrame([{**const, **r} for r in rows], schema_overrides=SCHEMA)
    io.write_parquet(table, out_path)
    io.write_provenance(out_path, spec)
    for r in table.filter((pl.col("seed") == 0) & pl.col("headline")).iter_rows(named=True):
        log.info(
            "seed 0, N=%g: %s picks step %d (Pass@N %.4f, gap to oracle %.4f)",
            r["n"],
            r["rule"],
            r["step"],
            r["pass_at_n"],
            r["oracle_gap"],
        )
