"""Properties of the metrics over generated inputs (hypothesis, fixed CI profile)."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from covpipe import metrics as M

settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci")

finite = st.floats(-50, 50, allow_nan=False)
ratios = arrays(np.float64, st.integers(1, 40), elements=finite)
levels = arrays(np.float64, st.integers(1, 8), elements=st.floats(1, 1e8))


@st.composite
def normalized_pair(draw):
    """Two distributions over a small support: (p, q), both strictly positive and normalized."""
    k = draw(st.integers(2, 6))
    p = np.array(draw(st.lists(st.floats(0.01, 1), min_size=k, max_size=k)))
    q = np.array(draw(st.lists(st.floats(0.01, 1), min_size=k, max_size=k)))
    return p / p.sum(), q / q.sum()


@given(normalized_pair())
def test_kl_is_non_negative_when_model_is_normalized(pq):
    p, q = pq
    assert M.kl_divergence(np.log(p) - np.log(q), weights=p) >= -1e-12


@given(ratios, levels)
def test_coverage_is_non_increasing_in_n_and_within_unit_interval(x, lv):
    lv = np.sort(lv)
    cov = M.coverage_profile(x, lv)
    assert ((cov >= 0) & (cov <= 1)).all()
    assert (np.diff(cov) <= 1e-12).all()


@given(
    arrays(np.float64, st.integers(1, 20), elements=st.floats(0, 1)),
    arrays(np.float64, st.integers(1, 6), elements=st.floats(1, 1e6)),
)
def test_pass_at_n_is_non_decreasing_in_n_and_within_unit_interval(p, ns):
    ns = np.sort(ns)
    out = M.pass_at_n_exact(p, ns)
    assert ((out >= 0) & (out <= 1)).all()
    assert (np.diff(out) >= -1e-12).all()


@given(st.integers(1, 9).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_unbiased_equals_subset_enumeration(nck):
    n, c, k = nck
    correct = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    exact = sum(any(correct[i] for i in s) for s in subsets) / len(subsets)
    assert M.pass_at_k_unbiased(n, c, k) == pytest.approx(exact, abs=1e-12)


@given(ratios, st.data())
def test_weighted_metrics_equal_unweighted_on_duplicated_samples(x, data):
    counts = np.array(data.draw(st.lists(st.integers(1, 4), min_size=x.size, max_size=x.size)))
    dup = np.repeat(x, counts)
    assert M.kl_divergence(x, counts) == pytest.approx(M.kl_divergence(dup), abs=1e-9)
    assert M.coverage_profile(x, [2, 64], counts) == pytest.approx(M.coverage_profile(dup, [2, 64]))


def test_infinities_and_single_samples_give_defined_results():
    assert M.kl_divergence([np.inf]) == math.inf
    assert M.coverage_profile([np.inf], [1e300]).tolist() == [1.0]
    assert M.cross_entropy([-np.inf, -1.0]) == math.inf
    assert M.kl_divergence([0.3]) == pytest.approx(0.3)
    assert M.pass_at_n_exact([1.0], [1, 5]).tolist() == [1.0, 1.0]
    assert M.mean_ci([2.0]) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="-inf means pi_D"):
        M.kl_divergence([-np.inf])
    with pytest.raises(ValueError, match="weights: sum to zero"):
        M.coverage_profile([1.0, 2.0], [2], weights=[0.0, 0.0])
