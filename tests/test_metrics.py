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


def normalized_pairs():
    """(p, q) pairs of distributions on a few outcomes: random ones, and the nearly tight ones of
    Prop. 3.1 (mass c on an outcome whose ratio p/q is r N, c small), so the bound is within a few
    percent of Cov_N and signed log-ratios (p < q) occur on every pair."""
    rng = np.random.default_rng(0)
    pairs = [(rng.dirichlet(np.full(6, a)), rng.dirichlet(np.full(6, a))) for a in (0.3, 1.0, 3.0) for _ in range(30)]
    for n in (4, 16, 256):
        for c in (1e-3, 1e-2):
            for r in (1.0, 0.9):  # ratio exactly N (counts), or just below it (does not count)
                pairs.append((np.array([c, 1 - c]), np.array([c / (r * n), 1 - c / (r * n)])))
    return pairs


def test_coverage_of_normalized_pairs_matches_enumeration_and_obeys_prop_3_1():
    """X = log p(y)/q(y) for y ~ p on every outcome: Cov_N is the mass where p/q >= N (ratios, no
    logs), and Cov_N <= KL / (log N - 1 + 1/N) (paper Prop. 3.1), nearly tight for small c."""
    closest = np.inf
    for p, q in normalized_pairs():
        x = np.log(p) - np.log(q)
        assert (x < 0).any()
        kl = M.kl_divergence(x, p)
        assert kl == pytest.approx(float(np.sum(p * np.log(p / q))), rel=1e-12, abs=1e-15)
        for n in (4, 16, 256):
            cov = M.coverage_profile(x, [n], p)[0]
            assert cov == pytest.approx(float(p[p / q >= n * (1 - 1e-9)].sum()), abs=1e-12)
            bound = kl / (math.log(n) - 1 + 1 / n)
            assert cov <= bound
            if cov > 0:
                closest = min(closest, bound / cov)
    assert closest < 1.01  # some pair sits within 1% of the bound


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


def test_cross_entropy_of_a_categorical_matches_closed_form_and_kl_plus_entropy():
    """y ~ p over 5 outcomes, weighted by p: CE = -sum p log q, KL = sum p log p/q, H = -sum p log p."""
    p = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    q = np.array([0.1, 0.3, 0.3, 0.2, 0.1])
    ce = -float(np.sum(p * np.log(q)))
    entropy = -float(np.sum(p * np.log(p)))
    assert M.cross_entropy(np.log(q), p) == pytest.approx(ce, rel=1e-12)
    assert M.cross_entropy(np.log(q), p) == pytest.approx(M.kl_divergence(np.log(p / q), p) + entropy, rel=1e-12)
    # Unweighted, it is the plain mean of -log q over the given sequences.
    assert M.cross_entropy(np.log(q)) == pytest.approx(-float(np.mean(np.log(q))), rel=1e-12)
    assert M.cross_entropy([0.0, -np.inf], [1.0, 0.0]) == 0.0
    assert M.cross_entropy([0.0, -np.inf]) == np.inf


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


def wilson_by_quadratic(p, n, z):
    """The Wilson interval as the set of p0 with (p - p0)^2 <= z^2 p0 (1 - p0) / n: the roots of
    (1 + z^2/n) p0^2 - (2 p + z^2/n) p0 + p^2 = 0."""
    a, b, c = 1 + z**2 / n, -(2 * p + z**2 / n), p**2
    disc = math.sqrt(b * b - 4 * a * c)
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


def test_wilson_interval_matches_scipy_and_the_quadratic_on_a_grid():
    z = stats.norm.ppf(0.975)
    for n in (1, 7, 100, 10_000):  # integer n: scipy's binomtest, k = p n successes
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            lo, hi = M.wilson_interval(k / n, n, z=z)
            ref = stats.binomtest(k, n).proportion_ci(method="wilson")
            assert (float(lo), float(hi)) == pytest.approx((ref.low, ref.high), abs=1e-6)
    for n in (2.5, 7.3, 123.4):  # a non-integer effective n (Kish's n of weighted samples)
        for p in (0.0, 0.01, 0.3, 0.5, 0.97, 1.0):
            lo, hi = M.wilson_interval(p, n, z=z)
            assert (float(lo), float(hi)) == pytest.approx(wilson_by_quadratic(p, n, z), abs=1e-9)
    lo, hi = M.wilson_interval(np.array([0.0, 1.0]), 50.0)  # the default z = 1.96, arrays
    assert lo[0] == 0.0 and hi[1] == 1.0 and 0 < hi[0] < 0.1 and 0.9 < lo[1] < 1


def test_weighted_metrics_equal_unweighted_on_duplicates():
    x = np.array([0.1, 2.0, 7.0])
    dup = np.repeat(x, [1, 2, 3])
    assert M.kl_divergence(x, [1, 2, 3]) == pytest.approx(M.kl_divergence(dup))
    assert M.coverage_profile(x, [2, 100], [1, 2, 3]) == pytest.approx(M.coverage_profile(dup, [2, 100]))
