"""Exact sequence-level metrics of a model against a known teacher, in nats.

Every function here is pure: arrays in, arrays out, no I/O, no global RNG, no model state.
The common input is the per-sequence log-ratio

    X_i = log pi_D(y_i | x_i) - log pi_hat(y_i | x_i),   y_i ~ pi_D(. | x_i),

a float64 array of shape (n_seq,) in nats, summed over the H tokens of the response. KL is
E[X], the coverage profile is the upper tail P[X >= log N] (paper Def. 1.1, Remark 2.1).
X = +inf where the model gives a teacher-typical response probability zero.

Weighted means are sum_i w_i x_i / sum_i w_i over the positively weighted entries (`weighted_mean`:
KL, cross-entropy and every mean the evaluate stage reports). Cov_N, Pass@N and the stopped KL
weight by w / sum(w) first: the same value, rounded differently, kept so their tables stay as
published.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "coverage_profile",
    "cross_entropy",
    "kl_divergence",
    "mean_ci",
    "mean_interval",
    "pass_at_k_unbiased",
    "pass_at_n_exact",
    "stopped_kl",
    "weighted_mean",
    "wilson_interval",
]


def _as_float_array(name: str, values, *, allow_inf: bool) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError(f"{name}: contains NaN at index {int(np.flatnonzero(np.isnan(arr))[0])}")
    if not allow_inf and np.isinf(arr).any():
        raise ValueError(f"{name}: contains inf at index {int(np.flatnonzero(np.isinf(arr))[0])}")
    return arr


def _checked_weights(weights, n: int) -> np.ndarray:
    """Weights of shape (n,), non-negative, not all zero; ones when None."""
    if n == 0:
        raise ValueError("log_ratios: empty; a metric over zero sequences is undefined")
    if weights is None:
        return np.ones(n)
    w = _as_float_array("weights", weights, allow_inf=False)
    if w.shape != (n,):
        raise ValueError(f"weights: expected shape ({n},), got {w.shape}")
    if (w < 0).any():
        raise ValueError("weights: must be non-negative")
    if w.sum() <= 0:
        raise ValueError("weights: sum to zero")
    return w


def _normalized_weights(weights, n: int) -> np.ndarray:
    """Weights of shape (n,), non-negative, summing to 1; uniform when None."""
    w = _checked_weights(weights, n)
    return w / w.sum()


def weighted_mean(values, weights=None) -> float:
    """sum_i w_i x_i / sum_i w_i over the entries of positive weight (a zero-weight +inf never counts).

    values: float, shape (n,), any unit; +-inf allowed, NaN refused.
    weights: optional float, shape (n,), non-negative, not all zero; uniform when None.
    Returns: float, the unit of values.

    >>> weighted_mean([1.0, 4.0], [3.0, 1.0])
    1.75
    """
    x = _as_float_array("values", values, allow_inf=True)
    return _weighted_mean(x, _checked_weights(weights, x.size))


def _weighted_mean(x: np.ndarray, w: np.ndarray) -> float:
    mask = w > 0
    return float(np.sum(x[mask] * w[mask]) / w[mask].sum())


def mean_interval(values, weights=None, z: float = 1.96):
    """Normal-approximation interval of `weighted_mean(values, weights)`: (low, high).

    mean +- z sd / sqrt(n_eff), with sd the weighted standard deviation and n_eff Kish's effective
    sample size (`effective_sample_size`), over the entries of positive weight.
    values: float, shape (n,); weights: optional float, shape (n,), non-negative.
    Returns: (low, high), floats in the unit of values; (nan, nan) when a value is infinite.

    >>> mean_interval([0.0, 2.0], z=1.0)
    (0.29289321881345254, 1.7071067811865475)
    """
    x = _as_float_array("values", values, allow_inf=True)
    w = _checked_weights(weights, x.size)
    mask = w > 0
    x, w = x[mask], w[mask]
    mean = _weighted_mean(x, w)
    if np.isfinite(x).all():
        sd = np.sqrt(np.sum(w * (x - mean) ** 2) / w.sum())
        half = z * sd / np.sqrt(effective_sample_size(w))
    else:
        half = np.nan
    return float(mean - half), float(mean + half)


def kl_divergence(log_ratios, weights=None) -> float:
    """Sequence-level KL(pi_D || pi_hat) = E[X] in nats (paper Sec. 3).

    log_ratios: float, shape (n_seq,), nats, per-sequence sums, y ~ pi_D; +inf allowed.
    weights: optional float, shape (n_seq,), non-negative (class reweighting).
    Returns: float, nats; +inf when any positively weighted sequence has X = +inf.

    >>> kl_divergence([0.0, 2.0])
    1.0
    """
    x = _as_float_array("log_ratios", log_ratios, allow_inf=True)
    if (x == -np.inf).any():
        raise ValueError("log_ratios: -inf means pi_D(y|x) = 0 for a sample drawn from pi_D")
    return _weighted_mean(x, _checked_weights(weights, x.size))


def cross_entropy(model_log_probs, weights=None) -> float:
    """Sequence-level cross-entropy E_{pi_D}[-log pi_hat(y|x)] in nats.

    model_log_probs: float, shape (n_seq,), nats, log pi_hat(y|x) summed over tokens, y ~ pi_D;
        -inf allowed (gives +inf).
    Returns: float, nats.

    >>> cross_entropy([-1.0, -3.0])
    2.0
    """
    lp = _as_float_array("model_log_probs", model_log_probs, allow_inf=True)
    if (lp == np.inf).any():
        raise ValueError("model_log_probs: +inf is not a log-probability")
    return _weighted_mean(-lp, _checked_weights(weights, lp.size))


def coverage_profile(log_ratios, levels, weights=None) -> np.ndarray:
    """Cov_N = P[X >= log N] for each N (paper Eq. 1, with >=). Lower is better.

    log_ratios: float, shape (n_seq,), nats, per-sequence sums over tokens, y ~ pi_D.
    levels: float, shape (k,), each N >= 1.
    weights: optional float, shape (n_seq,), non-negative (class reweighting).
    Returns: float64, shape (k,), values in [0, 1], non-increasing in N.

    >>> coverage_profile([0.0, 1.0, 5.0], [1.0, 2.0, 1000.0]).tolist()
    [1.0, 0.6666666666666666, 0.0]
    """
    x = _as_float_array("log_ratios", log_ratios, allow_inf=True)
    lv = _as_float_array("levels", np.atleast_1d(np.asarray(levels, dtype=np.float64)), allow_inf=False)
    if (lv < 1).any():
        raise ValueError(f"levels: every N must be >= 1, got {lv[lv < 1][0]:g}")
    w = _normalized_weights(weights, x.size)
    # A tiny tolerance so that a ratio of exactly N (computed in floats) counts as >= N.
    thresholds = np.log(lv) - 1e-12
    hits = x[None, :] >= thresholds[:, None]  # (k, n_seq)
    return np.clip(hits.astype(np.float64) @ w, 0.0, 1.0)


def stopped_kl(token_kls, level: float, weights=None) -> float:
    """Stopped KL D_seq,N = E[min(log N, sum_h KL_h)] in nats (paper Prop. D.10).

    token_kls: float, shape (n_seq, H), nats; KL(pi_D(.|prefix) || pi_hat(.|prefix)) at each
        position along y ~ pi_D. +inf allowed (capped at log N).
    level: N > 1.
    Returns: float in [0, log N].
    """
    k = np.asarray(token_kls, dtype=np.float64)
    if k.ndim != 2:
        raise ValueError(f"token_kls: expected shape (n_seq, H), got {k.shape}")
    if np.isnan(k).any():
        raise ValueError("token_kls: contains NaN")
    if not level > 1 or not math.isfinite(level):
        raise ValueError(f"level: expected a finite N > 1, got {level!r}")
    per_seq = np.minimum(k.sum(axis=1), math.log(level))
    w = _normalized_weights(weights, per_seq.size)
    mask = w > 0
    return float(np.sum(per_seq[mask] * w[mask]))


def pass_at_n_exact(p_correct, ns, weights=None) -> np.ndarray:
    """Pass@N = mean over prompts of 1 - (1 - p)^N, exactly, for each N.

    p_correct: float, shape (n_prompt,), the model's total probability of a correct response.
    ns: int or float, shape (k,), each N >= 1.
    weights: optional float, shape (n_prompt,), non-negative (class reweighting).
    Returns: float64, shape (k,), in [0, 1], non-decreasing in N.

    Computed as -expm1(N * log1p(-p)), which keeps full precision for p near 0 and large N.

    >>> pass_at_n_exact([0.5], [1, 2]).tolist()
    [0.5, 0.75]
    """
    p = _as_float_array("p_correct", p_correct, allow_inf=False)
    if p.size == 0:
        raise ValueError("p_correct: empty")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("p_correct: probabilities must lie in [0, 1]")
    n = _as_float_array("ns", np.atleast_1d(np.asarray(ns, dtype=np.float64)), allow_inf=False)
    if (n < 1).any():
        raise ValueError("ns: every N must be >= 1")
    with np.errstate(divide="ignore"):
        log_fail = np.log1p(-p)  # (n_prompt,), -inf where p = 1
    per_prompt = -np.expm1(n[:, None] * log_fail[None, :])  # (k, n_prompt)
    return np.clip(per_prompt @ _normalized_weights(weights, p.size), 0.0, 1.0)


def pass_at_k_unbiased(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Edge cases: k > n raises (no unbiased estimate exists); c = 0 gives 0; n - c < k gives 1.
    Computed as a product of ratios, so it never overflows.

    >>> pass_at_k_unbiased(4, 2, 2)
    0.8333333333333333
    """
    for name, v in (("n", n), ("c", c), ("k", k)):
        if int(v) != v:
            raise ValueError(f"{name}: expected an integer, got {v!r}")
    n, c, k = int(n), int(c), int(k)
    if n < 1 or k < 1 or not 0 <= c <= n:
        raise ValueError(f"pass_at_k_unbiased: need n >= 1, k >= 1, 0 <= c <= n; got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"pass_at_k_unbiased: k={k} exceeds the number of samples n={n}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    i = np.arange(n - c + 1, n + 1, dtype=np.float64)
    return float(1.0 - np.prod(1.0 - k / i))


def wilson_interval(fraction, n_eff, z: float = 1.96):
    """Wilson score interval for a proportion (used for Cov_N).

    fraction: float or array, the observed proportion(s) in [0, 1].
    n_eff: effective sample size (Kish's n for weighted samples).
    Returns: (low, high), same shape as fraction.
    """
    p = np.asarray(fraction, dtype=np.float64)
    if n_eff <= 0:
        raise ValueError("n_eff: must be positive")
    denom = 1 + z**2 / n_eff
    centre = (p + z**2 / (2 * n_eff)) / denom
    half = z * np.sqrt(p * (1 - p) / n_eff + z**2 / (4 * n_eff**2)) / denom
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def effective_sample_size(weights) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2."""
    w = _as_float_array("weights", weights, allow_inf=False)
    return float(w.sum() ** 2 / np.sum(w**2))


def mean_ci(values, z: float = 1.96):
    """Normal-approximation (t for large n) interval of a mean: (mean, low, high).

    values: float, shape (n,); a single value gives a zero-width interval.
    """
    v = _as_float_array("values", values, allow_inf=True)
    if v.size == 0:
        raise ValueError("values: empty")
    m = float(v.mean())
    if v.size == 1 or not np.isfinite(v).all():
        return m, m, m
    half = z * float(v.std(ddof=1)) / math.sqrt(v.size)
    return m, m - half, m + half
