"""Every registered teacher: exact probabilities sum to 1 by enumeration, and its sampler
draws from them. Runs over the registry, so a new teacher is tested for free."""

import itertools

import numpy as np
import pytest
import torch

from covpipe.teachers import TEACHERS, build_teacher

SMALL = {
    "markov": [
        {"name": "markov", "vocab_size": 3, "order": 1, "classes": {"a": 0.25, "b": 0.75}},
        {"name": "markov", "vocab_size": 3, "order": 2, "prompt": "empty"},
        {"name": "markov", "vocab_size": 4, "order": 0},
    ],
    "ar_linear": [{"name": "ar_linear", "vocab_size": 3, "dim": 4, "window": 3, "scale": 4.0}],
}


def small_teachers():
    return [pytest.param(spec, id=f"{spec['name']}-{i}") for name in sorted(TEACHERS) for i, spec in enumerate(SMALL[name])]


def test_every_registered_teacher_has_a_small_instance():
    assert set(SMALL) == set(TEACHERS)


def all_responses(vocab, horizon):
    return np.array(list(itertools.product(range(vocab), repeat=horizon)), dtype=np.int64)


@pytest.mark.parametrize("spec", small_teachers())
def test_probabilities_sum_to_one(spec):
    t = build_teacher(spec)
    prompts = t.sample(6, 1, np.random.default_rng(0)).prompt
    ys = all_responses(t.vocab_size, 4)
    for x in prompts:
        total = np.exp(t.sequence_log_probs(np.repeat(x[None], len(ys), 0), ys)).sum()
        assert total == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("spec", small_teachers())
def test_sampler_frequencies_match_probabilities(spec):
    t = build_teacher(spec)
    batch = t.sample(1, 1, np.random.default_rng(1))
    x = batch.prompt[0]
    n, horizon = 40_000, 3
    # Sample many responses for one fixed prompt by fixing the class and resampling until the prompt matches.
    rng = np.random.default_rng(2)
    sampled = t.sample(n * 4, horizon, rng, cls=int(batch.cls[0]))
    same = (sampled.prompt == x).all(axis=1)
    ys = sampled.response[same][:n]
    codes = (ys * t.vocab_size ** np.arange(horizon)).sum(1)
    freq = np.bincount(codes, minlength=t.vocab_size**horizon) / len(ys)
    grid = all_responses(t.vocab_size, horizon)
    probs = np.exp(t.sequence_log_probs(np.repeat(x[None], len(grid), 0), grid))
    grid_codes = (grid * t.vocab_size ** np.arange(horizon)).sum(1)
    # 5 standard errors per cell
    se = np.sqrt(probs * (1 - probs) / len(ys))
    assert np.all(np.abs(freq[grid_codes] - probs) <= 5 * se + 1e-3)


@pytest.mark.parametrize("spec", small_teachers())
def test_same_seed_same_samples(spec):
    a = build_teacher(spec).sample(50, 5, np.random.default_rng(7))
    b = build_teacher(spec).sample(50, 5, np.random.default_rng(7))
    assert (a.response == b.response).all() and (a.prompt == b.prompt).all()


def test_class_is_a_function_of_the_prompt():
    t = build_teacher(SMALL["markov"][0])
    batch = t.sample(200, 3, np.random.default_rng(0))
    assert (t.classes_of(batch.prompt) == batch.cls).all()
    assert 0.15 < batch.cls.mean() < 0.95


def test_ar_linear_inherent_variance_matches_brute_force():
    t = build_teacher(SMALL["ar_linear"][0])
    batch = t.sample(5, 4, np.random.default_rng(3))
    got = t.inherent_variance(batch.prompt, batch.response)  # (n, H)
    from covpipe.sequences import context_windows

    windows = torch.from_numpy(context_windows(batch.prompt, batch.response, t.params.window - 1, t.bos))
    f = t.features
    c, e, norm = f._parts(windows, torch.float64)
    phi = f.scale * (c[..., None, :] + e) / norm[..., None]  # (n, H, V, d)
    assert torch.allclose(phi.norm(dim=-1), torch.full(phi.shape[:-1], f.scale, dtype=torch.float64))
    p = torch.softmax((phi @ t.theta), -1)  # (n, H, V)
    mean = (p[..., None] * phi).sum(-2)
    var = (p * ((phi - mean[..., None, :]) ** 2).sum(-1)).sum(-1)
    assert np.allclose(got, var.numpy(), atol=1e-10)
    assert (got >= 0).all() and (got <= t.params.scale**2 + 1e-9).all()
