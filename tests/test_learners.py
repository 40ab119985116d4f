"""Every learner's update against a hand computation on a tiny instance; the exact MLE at its
optimum; the distillation weights' budget identity; TTT's teacher-forced likelihood against its
own sampler; closed forms against autograd; config errors for learners."""

import numpy as np
import pytest
import torch

from covpipe.config import ConfigError, validate_config
from covpipe.learners import LEARNERS
from covpipe.learners.base import Problem, project
from covpipe.learners.distill import truncation_weights
from covpipe.learners.fitting import build_learner, fit, variants
from covpipe.learners.views import AutogradView, LinearView
from covpipe.models import Vocab, build_model
from covpipe.models.base import as_tensor
from covpipe.teachers import build_teacher

TINY = {"name": "ar_linear", "vocab_size": 3, "dim": 2, "window": 2, "scale": 2.0}


def tiny(n=4, horizon=3, seed=0, teacher=TINY):
    """A linear view of an ar_linear model on n sequences of a tiny teacher, and its model."""
    t = build_teacher(teacher)
    batch = t.sample(n, horizon, np.random.default_rng(seed))
    model = build_model({"class": "ar_linear"}, Vocab.of(t, horizon), teacher=t)
    return t, model, LinearView(model, as_tensor(batch.prompt), as_tensor(batch.response))


def hand_sequence_grad(view, theta, i):
    """sum_h phi(y_h) - E_p[phi], written out position by position."""
    phi, y, g = view.phi([i])[0], view.y[i], np.zeros_like(theta)
    for h in range(view.horizon):
        logits = phi[h] @ theta
        p = np.exp(logits - logits.max())
        p /= p.sum()
        g += phi[h, y[h]] - p @ phi[h]
    return g


def learner(spec, horizon=3, bound=2.0, sigma2=1.0, teacher_steps=None):
    return build_learner(spec, Problem(horizon, bound, sigma2, teacher_steps=teacher_steps), has_bound=True)


THETA = np.array([0.3, -0.2])


def test_every_learner_is_tested_below():
    assert set(LEARNERS) == {
        "mle_exact",
        "seq_sgd",
        "normalized_sgd",
        "sign_sgd",
        "adam",
        "token_sgd",
        "distill_truncated",
    }


def test_linear_gradients_match_autograd():
    t, model, view = tiny(n=5, horizon=4)
    auto = AutogradView(model, view.prompt, view.response)
    theta = np.array([[0.3, -0.2], [-0.5, 0.1]])
    assert view.grad(theta, [1, 3]) == pytest.approx(auto.grad(theta, [1, 3]), abs=1e-5)
    w = np.random.default_rng(0).random((2, 2, 4))
    assert view.grad(theta, [0, 2], w) == pytest.approx(auto.grad(theta, [0, 2], w), abs=1e-5)
    assert view.grad(theta[:1], [2])[0] == pytest.approx(hand_sequence_grad(view, theta[0], 2), abs=1e-12)


def test_seq_sgd_step_is_a_projected_sequence_gradient_step():
    _, _, view = tiny()
    lrn = learner({"name": "seq_sgd", "eta": 0.7})
    new = lrn.update(view, THETA[None], {}, np.array([2]), {"eta": np.array([0.7])})[0]
    assert new == pytest.approx(project(THETA + 0.7 * hand_sequence_grad(view, THETA, 2), 1.0), abs=1e-12)
    assert np.linalg.norm(new) <= 1 + 1e-12


def test_seq_sgd_paper_rule():
    lrn = learner({"name": "seq_sgd"}, horizon=3, bound=2.0, sigma2=5.0)
    assert lrn.hyper(100)["eta"] == pytest.approx(min(1 / (2 * 3 * 4), np.sqrt(2 / (5.0 * 100))))


def test_normalized_sgd_step_and_paper_rule():
    _, _, view = tiny()
    lrn = learner({"name": "normalized_sgd", "batch_size": 2}, bound=2.0, sigma2=5.0)
    hyper = lrn.hyper(64)  # T = 32 updates
    M = np.log(16)
    assert hyper["eta"] == pytest.approx(min(1 / 256, (M / (5.0 * 32)) ** 0.25))
    assert hyper["lam"] == pytest.approx(M / (16 * hyper["eta"]))
    g = (hand_sequence_grad(view, THETA, 0) + hand_sequence_grad(view, THETA, 1)) / 2
    eta, lam = 0.5, 0.3
    new = lrn.update(view, THETA[None], {}, np.array([0, 1]), {"eta": np.array([eta]), "lam": np.array([lam])})[0]
    assert new == pytest.approx(project(THETA + eta * g / (lam + np.linalg.norm(g)), 1.0), abs=1e-12)


def test_sign_sgd_step():
    _, _, view = tiny()
    lrn = learner({"name": "sign_sgd", "batch_size": 2, "eta": 0.05})
    g = hand_sequence_grad(view, THETA, 0) + hand_sequence_grad(view, THETA, 1)
    new = lrn.update(view, THETA[None], {}, np.array([0, 1]), {"eta": np.array([0.05])})[0]
    assert new == pytest.approx(THETA + 0.05 * np.sign(g), abs=1e-12)


def test_adam_two_steps():
    _, _, view = tiny()
    lrn = learner({"name": "adam", "batch_size": 1, "eta": 0.1})
    state = lrn.init_state(view, THETA[None])
    theta, m, v = THETA.copy(), np.zeros(2), np.zeros(2)
    for t, i in enumerate([0, 1], start=1):
        got = lrn.update(view, theta[None], state, np.array([i]), {"eta": np.array([0.1])})[0]
        g = hand_sequence_grad(view, theta, i)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        theta = project(theta + 0.1 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8), 1.0)
        assert got == pytest.approx(theta, abs=1e-12)


def test_token_sgd_takes_one_projected_step_per_token():
    _, _, view = tiny(horizon=4)
    lrn = learner({"name": "token_sgd", "eta": 0.9})
    got = lrn.update(view, THETA[None], {}, np.array([1]), {"eta": np.array([0.9])})[0]
    theta, phi, y = THETA.copy(), view.phi([1])[0], view.y[1]
    for h in range(4):
        p = np.exp(phi[h] @ theta)
        p /= p.sum()
        theta = project(theta + 0.9 * (phi[h, y[h]] - p @ phi[h]), 1.0)
    assert got == pytest.approx(theta, abs=1e-12)
    paper = learner({"name": "token_sgd"}, bound=2.0, sigma2=1.0)
    assert paper.hyper(50)["eta"] == pytest.approx(min(1 / 8, 1 / np.sqrt(1.0 * 50)))


def test_distill_truncated_step_weights_token_gradients_by_the_kl_budget():
    t, model, view = tiny(horizon=4)
    teacher_steps = t.step_log_probs(view.prompt.numpy(), view.response.numpy())
    lrn = learner({"name": "distill_truncated", "eta": 0.4, "level": 1.5}, teacher_steps=lambda: teacher_steps)
    state = lrn.init_state(view, THETA[None])
    got = lrn.update(
        view, THETA[None], state, np.array([2]), {"eta": np.array([0.4]), "budget_nats": np.array([np.log(1.5)])}
    )[0]
    phi, y, g, spent = view.phi([2])[0], view.y[2], np.zeros(2), 0.0
    for h in range(4):
        p = np.exp(phi[h] @ THETA)
        p /= p.sum()
        q = np.exp(teacher_steps[2, h])
        a = float(np.sum(q * np.log(q / p)))
        alpha = 1.0 if spent + a <= np.log(1.5) else (0.0 if spent > np.log(1.5) else (np.log(1.5) - spent) / a)
        spent += a
        g += alpha * (phi[h, y[h]] - p @ phi[h])
    assert got == pytest.approx(project(THETA + 0.4 * g, 1.0), abs=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_truncation_weights_spend_exactly_the_budget(seed):
    rng = np.random.default_rng(seed)
    a = rng.exponential(size=(7, 12)) * (rng.random((7, 12)) > 0.3)  # zeros included
    budget = rng.uniform(0.1, 8)
    alpha = truncation_weights(a, budget)
    assert ((alpha >= 0) & (alpha <= 1)).all()
    assert (alpha * a).sum(-1) == pytest.approx(np.minimum(budget, a.sum(-1)), abs=1e-12)


def test_mle_exact_reaches_the_unconstrained_optimum():
    t, model, view = tiny(n=40, horizon=5, teacher={**TINY, "theta_norm": 0.5})
    lrn = build_learner({"name": "mle_exact", "radius": None}, Problem(5, 2.0, 1.0), has_bound=True)
    theta, info = lrn.solve(view, np.zeros(2), np.arange(40))
    assert info["mu"] == 0 and info["grad_norm"] < 1e-9
    assert np.linalg.norm(view.value_grad_hessian(theta, np.arange(40))[1]) < 1e-9


def test_mle_exact_matches_a_brute_force_grid_in_one_dimension():
    # kl_lower_bound has d = 1; keep sequences with the informative prompt so the optimum is unique.
    t = build_teacher({"name": "kl_lower_bound", "n": 1, "scale": 1.0})
    batch = t.sample(60, 6, np.random.default_rng(3))
    model = build_model({"class": "ar_linear"}, Vocab.of(t, 6), teacher=t)
    view = LinearView(model, as_tensor(batch.prompt), as_tensor(batch.response))
    grid = np.linspace(-1, 1, 200_001)
    values = [view.value_grad_hessian(np.array([g]), np.arange(60))[0] for g in grid[::1000]]
    coarse = grid[::1000][int(np.argmax(values))]
    fine = grid[np.abs(grid - coarse) <= 0.011]
    best = fine[int(np.argmax([view.value_grad_hessian(np.array([g]), np.arange(60))[0] for g in fine]))]
    lrn = build_learner({"name": "mle_exact"}, Problem(6, 1.0, 1.0), has_bound=True)
    theta, info = lrn.solve(view, np.zeros(1), np.arange(60))
    assert theta[0] == pytest.approx(best, abs=2e-5)
    assert info["grad_norm"] < 1e-7


def test_mle_exact_on_the_ball_meets_kkt():
    t, model, view = tiny(n=30, horizon=5, teacher={**TINY, "scale": 6.0})
    lrn = build_learner({"name": "mle_exact", "radius": 0.2}, Problem(5, 6.0, 1.0), has_bound=True)
    theta, info = lrn.solve(view, np.zeros(2), np.arange(30))
    grad = view.value_grad_hessian(theta, np.arange(30))[1]
    assert np.linalg.norm(theta) == pytest.approx(0.2, rel=1e-7)
    assert info["mu"] > 0 and np.linalg.norm(grad - info["mu"] * theta) < 1e-6  # grad L = mu theta


def test_ttt_teacher_forced_likelihood_is_the_product_of_its_sampled_step_probabilities():
    t = build_teacher({"name": "ar_linear", "vocab_size": 4, "dim": 3, "window": 3, "scale": 3.0})
    model = build_model({"class": "ar_linear"}, Vocab.of(t, 6), teacher=t)
    with torch.no_grad():
        model.theta.copy_(torch.tensor([0.2, -0.5, 0.4]))
    from covpipe.learners.ttt import TTT

    ttt = TTT(model, eta=0.3, radius=1.0)
    prompt = as_tensor(t.sample(20, 6, np.random.default_rng(0)).prompt)
    response, sampled = ttt.sample_with_log_probs(prompt, 6, torch.Generator().manual_seed(0))
    forced = ttt.token_log_probs(prompt, response).numpy()
    assert forced == pytest.approx(sampled, abs=1e-12)
    assert np.exp(ttt.step_log_probs(prompt, response).numpy()).sum(-1) == pytest.approx(np.ones((20, 6)))
    assert model.theta.detach().numpy() == pytest.approx([0.2, -0.5, 0.4])  # weights reset after each use
    # TTT differs from the model it adapts, and the autograd route gives the same numbers.
    plain = model.token_log_probs(prompt, response).detach().numpy()
    assert not np.allclose(forced, plain)
    auto = AutogradView(model, prompt, response)
    _, steps = auto.token_walk(np.repeat(np.array([[0.2, -0.5, 0.4]]), 3, 0), np.arange(3), np.full(3, 0.3), 1.0)
    assert np.take_along_axis(steps, response[:3, :, None].numpy(), -1)[..., 0] == pytest.approx(forced[:3], abs=1e-5)


def test_ttt_is_evaluated_as_its_own_model_for_token_sgd_only():
    t, model, view = tiny()
    spec = {"model_name": "tok", "train": {"learner": {"name": "token_sgd", "ttt": True}}}
    assert [name for name, _ in variants(spec, model, {"eta": 0.1, "radius": 1.0})] == ["tok+ttt"]
    average = {"eta": 0.1, "radius": 1.0, "average": torch.tensor([0.25, -0.5], dtype=torch.float64)}
    found = dict(variants(spec, model, average))
    assert list(found) == ["tok+avg", "tok+ttt", "tok+avg+ttt"]
    assert found["tok+avg"].theta.detach().tolist() == [0.25, -0.5]
    assert found["tok+avg+ttt"].base is found["tok+avg"] and model.theta.detach().tolist() != [0.25, -0.5]
    assert variants({**spec, "train": {"learner": {"name": "seq_sgd"}}}, model, {"eta": 0.1, "radius": 1.0}) == []


def test_budget_dependent_rules_give_each_checkpoint_its_own_run():
    _, _, view = tiny(n=16, horizon=3)
    (out,) = learner({"name": "token_sgd"}, sigma2=100.0).run(view, np.zeros(2), [4, 16])
    assert out[4].hyper["eta"] == pytest.approx(0.05) and out[16].hyper["eta"] == pytest.approx(
        0.025
    )  # (sigma2 T)^-1/2
    for s in (4, 16):  # each checkpoint is the run with eta(T = s) over the first s sequences
        (alone,) = learner({"name": "token_sgd", "eta": out[s].hyper["eta"]}).run(view, np.zeros(2), [s])
        assert out[s].theta == pytest.approx(alone[s].theta, abs=1e-12)


def test_fit_returns_checkpoints_log_and_resolved_hyperparameters():
    t, model, view = tiny(n=16, horizon=3)
    spec = {
        "study": "s",
        "teacher": TINY,
        "model_name": "m",
        "model": {"class": "ar_linear"},
        "horizon": 3,
        "train": {"steps": 16, "checkpoints": [8, 16], "learner": {"name": "seq_sgd"}},
    }
    out = fit(spec, model, t, view.prompt, view.response, seed=0)
    # step 0 is the start (theta = 0, the uniform model): what "learns" is measured against
    assert sorted(out["checkpoints"]) == [0, 8, 16] and [r["step"] for r in out["log"]] == [0, 8, 16]
    assert out["checkpoints"][0]["theta"].abs().max() == 0 and out["learner"][0] == {}
    assert out["log"][0]["train_loss"] == pytest.approx(np.log(3))  # uniform over V = 3, nats/token
    assert out["learner"][16]["radius"] == 1.0 and out["learner"][16]["sigma_star_sq"] > 0


def study(model_entry, **changes):
    base = {
        "teacher": TINY,
        "horizons": [3],
        "seeds": 1,
        "data": {"n_train": 16, "n_eval": 8},
        "models": {"m": model_entry},
        "train": {"steps": 16, "checkpoints": [8, 16]},
    }
    return {"studies": {"s": {**base, **changes}}}


LEARNER_ERRORS = [
    (
        study({"class": "ar_linear", "learner": {"name": "seq_sdg"}}),
        "studies.s.models.m.learner.name: unknown learner 'seq_sdg'; known: adam, distill_truncated, mle_exact, "
        "normalized_sgd, seq_sgd, sign_sgd, token_sgd",
    ),
    (study({"class": "ar_linear", "learner": {"eta": 0.1}}), "studies.s.models.m.learner.name: missing; known: adam"),
    (
        study({"class": "ar_linear", "learner": {"name": "seq_sgd", "eta": "fast"}}),
        "studies.s.models.m.learner.eta: expected 'paper' or a positive number, got 'fast'",
    ),
    (
        study({"class": "ar_linear", "learner": {"name": "adam", "eta": -1}}),
        "studies.s.models.m.learner.eta: Input should be greater than 0, got -1",
    ),
    (
        study({"class": "ar_linear", "learner": {"name": "sign_sgd", "momentum": 0.9}}),
        "studies.s.models.m.learner.momentum: unknown key",
    ),
    (
        study({"class": "ar_linear", "train": {"learner": {"name": "normalized_sgd", "batch_size": 3}}}),
        "studies.s.models.m.train.learner.batch_size: checkpoints count sequences and must be multiples of K=3, got 8",
    ),
    (
        study({"class": "ar_linear"}, train={"steps": 32, "checkpoints": [32], "learner": {"name": "seq_sgd"}}),
        "studies.s.train.learner.name: learners make one pass over the sample: train.steps=32 sequences exceeds "
        "data.n_train=16",
    ),
    (
        study({"class": "gru", "learner": {"name": "token_sgd"}}),
        "studies.s.models.m.learner.eta: the paper's rule needs a model with a feature bound B (ar_linear); give a number",
    ),
    (
        study({"class": "table_per_position", "learner": {"name": "mle_exact"}}),
        "studies.s.models.m.learner.name: mle_exact needs a model trained by gradients; class 'table_per_position' "
        "is fitted by counting",
    ),
    (
        study({"class": "ar_linear", "learner": {"name": "seq_sgd"}}, teacher={"name": "markov", "vocab_size": 3}),
        "studies.s.models.m.learner.eta: the paper's rule needs sigma*^2, which teacher 'markov' does not compute; "
        "give a number",
    ),
]


@pytest.mark.parametrize(
    "cfg,message", LEARNER_ERRORS, ids=[m.split(": ")[0] + str(i) for i, (_, m) in enumerate(LEARNER_ERRORS)]
)
def test_bad_learner_config_gets_one_line_naming_the_key(cfg, message):
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, source="c.yaml")
    text = str(err.value)
    assert "\n" not in text and text.startswith("c.yaml: " + message)


def test_learner_spec_leaves_studies_without_one_unchanged():
    from covpipe.specs import train_spec

    plain = validate_config(study({"class": "ar_linear"}))["studies"]["s"]
    assert "learner" not in train_spec("s", plain, "m", 3)["train"]
    chosen = validate_config(study({"class": "ar_linear", "learner": {"name": "seq_sgd"}}))["studies"]["s"]
    spec = train_spec("s", chosen, "m", 3)
    assert spec["train"]["learner"]["name"] == "seq_sgd" and spec["code"] != train_spec("s", plain, "m", 3)["code"]
