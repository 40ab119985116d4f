"""Metrics against closed forms and exact enumeration."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from covpipe import metrics as M


def bernoulli_log_ratios(p, q):
    """Exact distribution of X = log p(y)/q(y), y ~ Ber(p): values and weights."""
    return np.array([math.log(p / q), math.log((1 - p) / (1 - q))]), np.array([p, 1 - p])


def test_kl_of_bernoullis_matches_closed_form():
    p, q = 0.3, 0.1
    x, w = bernoulli_log_ratios(p, q)
    closed = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    assert M.kl_divergence(x, w) == pytest.approx(closed, rel=1e-12)


def test_coverage_matches_tightness_example_of_prop_d2():
    # pi_D = Ber(p), pi_hat = Ber(p/N): the ratio on y=1 is exactly N, so Cov_N = p (>= counts).
    p, n = 0.2, 8.0
    x, w = bernoulli_log_ratios(p, p / n)
    cov = M.coverage_profile(x, [n, n * 1.01], w)
    assert cov[0] == pytest.approx(p)
    assert cov[1] == 0.0


def test_coverage_is_zero_for_n_above_one_when_model_is_teacher():
    assert M.coverage_profile(np.zeros(10), [1.0001, 2, 1e9]).tolist() == [0.0, 0.0, 0.0]
    assert M.coverage_profile(np.zeros(10), [1.0]) == pytest.approx([1.0])


def test_coverage_bounded_by_kl_per_prop_3_1():
    rng = np.random.default_rng(0)
    x = rng.exponential(1.0, 5000)  # any non-negative log-ratio sample
    for n in [4, 16, 256]:
        bound = M.kl_divergence(x) / (math.log(n) - 1 + 1 / n)
        assert M.coverage_profile(x, [n])[0] <= bound


def test_infinite_log_ratio_gives_infinite_kl_but_finite_coverage():
    x = np.array([0.0, np.inf])
    assert M.kl_divergence(x) == np.inf
    assert M.coverage_profile(x, [1e300]).tolist() == [0.5]
    assert M.kl_divergence(x, [1.0, 0.0]) == 0.0


def test_nan_and_bad_levels_are_refused_by_name():
    with pytest.raises(ValueError, match="log_ratios: contains NaN"):
        M.kl_divergence([0.0, float("nan")])
    with pytest.raises(ValueError, match="levels: every N must be >= 1"):
        M.coverage_profile([0.0], [0.5])
    with pytest.raises(ValueError, match="empty"):
        M.kl_divergence([])


def test_cross_entropy_is_kl_plus_entropy():
    rng = np.random.default_rng(1)
    teacher, model = rng.normal(-5, 1, 100), rng.normal(-6, 1, 100)
    assert M.cross_entropy(model) == pytest.approx(M.kl_divergence(teacher - model) + (-teacher.mean()))


def test_stopped_kl_caps_each_sequence_at_log_n():
    token_kls = np.array([[0.1, 0.2], [5.0, 5.0], [np.inf, 0.0]])
    expected = (0.3 + math.log(4) + math.log(4)) / 3
    assert M.stopped_kl(token_kls, 4.0) == pytest.approx(expected)


def test_pass_at_n_exact_matches_closed_form_and_is_stable_near_zero():
    assert M.pass_at_n_exact([0.5, 0.0, 1.0], [1, 3]).tolist() == pytest.approx([0.5, (0.875 + 1) / 3])
    p, n = 1e-12, 1e6
    assert M.pass_at_n_exact([p], [n])[0] == pytest.approx(1e-6 - 5e-13, rel=1e-9)


def test_pass_at_k_unbiased_matches_enumeration_of_subsets():
    for n, c, k in [(5, 2, 1), (5, 2, 3), (6, 0, 2), (6, 6, 2), (7, 3, 4), (4, 1, 4)]:
        correct = [True] * c + [False] * (n - c)
        subsets = list(itertools.combinations(range(n), k))
        exact = sum(any(correct[i] for i in s) for s in subsets) / len(subsets)
        assert M.pass_at_k_unbiased(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_unbiased_edges():
    assert M.pass_at_k_unbiased(10, 0, 5) == 0.0
    assert M.pass_at_k_unbiased(10, 10, 5) == 1.0
    assert M.pass_at_k_unbiased(10, 7, 5) == 1.0  # every 5-subset contains a correct sample
    with pytest.raises(ValueError, match="k=11 exceeds"):
        M.pass_at_k_unbiased(10, 3, 11)


def test_wilson_interval_matches_scipy():
    lo, hi = M.wilson_interval(0.3, 100)
    ref = stats.binomtest(30, 100).proportion_ci(method="wilson")
    assert (float(lo), float(hi)) == pytest.approx((ref.low, ref.high), abs=1e-3)


def test_weighted_metrics_equal_unweighted_on_duplicates():
    x = np.array([0.1, 2.0, 7.0])
    dup = np.repeat(x, [1, 2, 3])
    assert M.kl_divergence(x, [1, 2, 3]) == pytest.approx(M.kl_divergence(dup))
    assert M.coverage_profile(x, [2, 100], [1, 2, 3]) == pytest.approx(M.coverage_profile(dup, [2, 100]))
