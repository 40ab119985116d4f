"""The finite-context closed forms (covpipe.learners.context.ContextView) against the per-position
view (LinearView), seed by seed; all seeds of a learner job as one computation against one run per
seed; the average iterate against a hand-computed average."""

import numpy as np
import pytest

from covpipe.learners.base import Problem, project
from covpipe.learners.context import ContextView, has_context_form
from covpipe.learners.fitting import build_learner, fit_seeds
from covpipe.learners.views import LinearView
from covpipe.models import Vocab, build_model
from covpipe.models.base import as_tensor
from covpipe.teachers import build_teacher

TEACHERS = [
    {"name": "ar_linear", "vocab_size": 4, "dim": 3, "window": 2, "scale": 2.0},
    {"name": "ar_linear", "vocab_size": 3, "dim": 2, "window": 3, "scale": 1.5, "seed": 4},
    {"name": "sgd_two_scales", "rare_weight": 0.3, "rare_tokens": 2},
]
H, N, S = 5, 12, 3


def setup(teacher=TEACHERS[0], seeds=S, n=N, horizon=H):
    t = build_teacher(teacher)
    batches = [t.sample(n, horizon, np.random.default_rng(100 + s)) for s in range(seeds)]
    model = build_model({"class": "ar_linear"}, Vocab.of(t, horizon), teacher=t)
    assert has_context_form(model)
    ctx = ContextView(model, [b.prompt for b in batches], [b.response for b in batches])
    lin = [LinearView(model, as_tensor(b.prompt), as_tensor(b.response)) for b in batches]
    return t, model, batches, ctx, lin


@pytest.mark.parametrize("teacher", TEACHERS, ids=lambda t: t["name"] + str(t.get("window", "")))
def test_counts_give_the_per_position_closed_forms_for_every_seed(teacher):
    t, model, _, ctx, lin = setup(teacher)
    d = ctx.dim
    rng = np.random.default_rng(1)
    J = 2
    theta = rng.normal(size=(S * J, d)) * 0.7  # seed-major rows: J per seed
    idx = np.array([3, 0, 7])
    weights = rng.random((S * J, len(idx), H))
    got, got_w, got_steps = ctx.grad(theta, idx), ctx.grad(theta, idx, weights), ctx.steps(theta, idx)
    for s in range(S):
        rows = slice(s * J, (s + 1) * J)
        assert got[rows] == pytest.approx(lin[s].grad(theta[rows], idx), abs=1e-10)
        assert got_w[rows] == pytest.approx(lin[s].grad(theta[rows], idx, weights[rows]), abs=1e-10)
        assert got_steps[rows] == pytest.approx(lin[s].steps(theta[rows], idx), abs=1e-12)
        one = ctx.seed_view(s)
        for a, b in zip(
            one.value_grad_hessian(theta[s * J], np.arange(N)), lin[s].value_grad_hessian(theta[s * J], np.arange(N))
        ):
            assert np.asarray(a) == pytest.approx(np.asarray(b), abs=1e-10)
        assert one.log_likelihood(theta[s * J], idx) == pytest.approx(
            lin[s].log_likelihood(theta[s * J], idx), abs=1e-12
        )


def test_token_walk_matches_the_per_position_walk_row_by_row():
    _, _, _, ctx, lin = setup()
    rng = np.random.default_rng(2)
    theta = rng.normal(size=(S * 2, ctx.dim)) * 0.5
    idx = np.array([1, 4, 4, 0, 9, 2])  # row m walks sequence idx[m] of seed m // 2
    eta = np.array([0.1, 0.3, 0.2, 0.05, 0.4, 0.1])
    end, steps = ctx.token_walk(theta, idx, eta, radius=1.0)
    plain_end, plain_steps = ctx.token_walk(theta, idx, eta, radius=1.0, compiled=False)
    assert end == pytest.approx(plain_end, abs=1e-12) and steps == pytest.approx(plain_steps, abs=1e-12)
    free, _ = ctx.token_walk(theta * 4, idx, eta * 20, radius=None, record=False)
    assert free == pytest.approx(ctx.token_walk(theta * 4, idx, eta * 20, radius=None, compiled=False)[0], abs=1e-10)
    assert np.linalg.norm(free, axis=1).max() > 1  # unprojected
    for m in range(len(idx)):
        e, st = lin[m // 2].token_walk(theta[m : m + 1], idx[m : m + 1], eta[m : m + 1], radius=1.0)
        assert end[m] == pytest.approx(e[0], abs=1e-12)
        assert steps[m] == pytest.approx(st[0], abs=1e-12)
    h = 3
    at, one = ctx.position(theta, idx, h), ctx.token_step(theta, idx, h, eta, 1.0)
    for m in range(len(idx)):
        assert at[m] == pytest.approx(lin[m // 2].position(theta[m : m + 1], idx[m : m + 1], h)[0], abs=1e-12)
        assert one[m] == pytest.approx(
            lin[m // 2].token_step(theta[m : m + 1], idx[m : m + 1], h, eta[m : m + 1], 1.0)[0]
        )


SPECS = [
    {"name": "seq_sgd"},
    {"name": "seq_sgd", "eta": 0.05},
    {"name": "normalized_sgd", "batch_size": 2, "eta_scale": 50},
    {"name": "sign_sgd", "batch_size": 2, "eta": 0.05},
    {"name": "adam", "batch_size": 2, "eta": 0.05},
    {"name": "token_sgd"},
    {"name": "distill_truncated", "eta": 0.02},
    {"name": "mle_exact"},
]


@pytest.mark.parametrize("learner", SPECS, ids=lambda s: s["name"] + ("" if len(s) == 1 else "*"))
def test_all_seeds_as_one_computation_equal_one_run_per_seed(learner):
    """fit_seeds over S seeds (ContextView, one batched run) against each seed alone through the
    per-position LinearView with its own sigma*^2 and teacher steps."""
    t, model, batches, ctx, lin = setup(n=8)
    checkpoints = [2, 4, 8]
    spec = {
        "study": "s",
        "teacher": TEACHERS[0],
        "model_name": "m",
        "model": {"class": "ar_linear"},
        "horizon": H,
        "train": {"steps": 8, "checkpoints": checkpoints, "learner": learner},
    }
    models = [build_model({"class": "ar_linear"}, Vocab.of(t, H), teacher=t) for _ in range(S)]
    together = fit_seeds(
        spec,
        models,
        t,
        [as_tensor(b.prompt) for b in batches],
        [as_tensor(b.response) for b in batches],
        list(range(S)),
    )
    for s, b in enumerate(batches):
        sigma2 = float(t.inherent_variance(b.prompt, b.response).sum(1).mean())
        problem = Problem(
            H, model.feature_bound, sigma2, teacher_steps=lambda b=b: t.step_log_probs(b.prompt, b.response)
        )
        alone = build_learner(learner, problem, has_bound=True).run(lin[s], np.zeros(ctx.dim), checkpoints)[0]
        for c in checkpoints:
            assert together[s]["checkpoints"][c]["theta"].numpy() == pytest.approx(
                alone[c].theta, abs=1e-6
            )  # float32 model
            info = together[s]["learner"][c]
            assert {k: v for k, v in info.items() if k != "average"} == pytest.approx(alone[c].hyper)
            if alone[c].average is None:
                assert "average" not in info
            else:
                assert info["average"].numpy() == pytest.approx(alone[c].average, abs=1e-9)


def test_the_average_iterate_is_the_mean_of_the_points_the_updates_read():
    """seq_sgd with a constant step, by hand: theta_{t+1} = Proj(theta_t + eta g(theta_t; sample t)),
    average after T updates = (theta_1 + ... + theta_T) / T with theta_1 the start."""
    t, model, batches, ctx, lin = setup(seeds=1, n=6)
    eta = 0.2
    run = build_learner({"name": "seq_sgd", "eta": eta}, Problem(H, 2.0, 1.0), has_bound=True)
    (found,) = run.run(lin[0], np.zeros(ctx.dim), [3, 6])
    theta, points = np.zeros((1, ctx.dim)), []
    for i in range(6):
        points.append(theta[0].copy())
        theta = project(theta + eta * lin[0].grad(theta, [i]), 1.0)
        if i + 1 in (3, 6):
            assert found[i + 1].theta == pytest.approx(theta[0], abs=1e-14)
            assert found[i + 1].average == pytest.approx(np.mean(points, axis=0), abs=1e-14)
    K = 2  # mini-batches: T = n / K updates, each read at the point before it
    run = build_learner({"name": "sign_sgd", "eta": 0.1, "batch_size": K}, Problem(H, 2.0, 1.0), has_bound=True)
    (found,) = run.run(lin[0], np.zeros(ctx.dim), [6])
    theta, points = np.zeros((1, ctx.dim)), []
    for start in range(0, 6, K):
        points.append(theta[0].copy())
        theta = project(theta + 0.1 * np.sign(lin[0].grad(theta, np.arange(start, start + K)) / K), 1.0)
    assert found[6].average == pytest.approx(np.mean(points, axis=0), abs=1e-14)
    assert not np.allclose(found[6].average, found[6].theta)


def test_distillation_reads_the_teacher_per_context_only_when_it_is_the_models_own_map():
    t, model, batches, ctx, _ = setup(n=4)
    from covpipe.learners.fitting import _attach_teacher_context

    _attach_teacher_context(ctx, model, t, batches[0].prompt, batches[0].response)
    direct = t.step_log_probs(batches[1].prompt, batches[1].response)
    assert ctx.teacher_context[ctx.ctx[1]] == pytest.approx(direct, abs=1e-12)
    other = build_teacher({**TEACHERS[0], "seed": 9})  # its own feature map: the model's is not the teacher's
    fresh = ContextView(model, [b.prompt for b in batches], [b.response for b in batches])
    _attach_teacher_context(fresh, model, other, batches[0].prompt, batches[0].response)
    assert not hasattr(fresh, "teacher_context")
