"""Paper App. I.4's lower-bound instances (teachers/sgd_lower_bound.py): the quantity each lemma
bounds, checked numerically. Lemma I.6: one SGD step with eta >= 8/(HB) on the typical sample maps
each bad cap onto the other, and Cov_N ~ 1 on both (exact). Lemma I.7: with eta <= 8/(HB) the rare
coordinate moves at most 16 Bbar/(HB) per rare sample, so the rare prompts stay uncovered, checked
against actual runs. sigma*^2 <= 1 and the exact coverage against brute-force enumeration."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from covpipe.config import ConfigError, validate_config
from covpipe.learners.base import Problem
from covpipe.learners.fitting import build_learner
from covpipe.learners.views import view_of as learner_view
from covpipe.models import Vocab, build_model
from covpipe.models.base import as_tensor
from covpipe.teachers import build_teacher
from covpipe.teachers.sgd_lower_bound import THRESHOLD, iid_coverage

LEVELS = (2.0, 16.0, 256.0)


def instance(lemma, horizon, n=1024, **extra):
    return build_teacher({"name": "sgd_lower_bound", "lemma": lemma, "horizon": horizon, "n": n, **extra})


def view_of(t, prompt, response):
    """The linear view of an ar_linear model on (prompt, response), and the model (which starts at theta_0)."""
    model = build_model({"class": "ar_linear"}, Vocab.of(t, t.params.horizon), teacher=t)
    return learner_view(model, as_tensor(prompt), as_tensor(response)), model


def sgd(t, units):
    problem = Problem(t.params.horizon, t.bound, 1.0)
    return build_learner({"name": "seq_sgd", "eta_units": units}, problem, has_bound=True)


def trajectory(t, units, batch):
    """theta after every one of the batch's sequences, seq_sgd with eta = units/(HB): (T + 1, 2)."""
    view, _ = view_of(t, batch.prompt, batch.response)
    theta0 = view.initial()
    out = sgd(t, units).run(view, theta0, list(range(1, len(batch.response) + 1)))[0]  # the one seed
    return np.vstack([theta0, *[out[s].theta for s in sorted(out)]])


# ---- Lemma I.6 ---------------------------------------------------------------------------------


def cap_points(cap, sign, k=7):
    """A grid over the cap {sign theta_1 >= cap} of the unit ball: (m, 2)."""
    pts = [
        (sign * r * math.cos(a), r * math.sin(a))
        for r in np.linspace(cap, 1, k)
        for a in np.linspace(-math.acos(cap / r), math.acos(cap / r), k)
    ]
    return np.array(pts)


@pytest.mark.parametrize("horizon", [8, 64, 256])
def test_one_large_step_on_the_typical_sample_maps_each_bad_cap_onto_the_other(horizon):
    t = instance("I.6", horizon)
    cap = t.params.cap
    zeros = np.ones((1, horizon), np.int64)  # token id 1 is y = 0: the typical response
    view, _ = view_of(t, np.zeros((1, 1), np.int64), zeros)
    for sign in (1, -1):
        theta = cap_points(cap, sign)
        for units in (THRESHOLD, 9.0, 16.0, 64.0, 1e3, 1e5):
            lrn = sgd(t, units)
            new = lrn.update(view, theta, {}, np.array([0]), {"eta": np.full(len(theta), lrn.hyper(1)["eta"])})
            assert (-sign * new[:, 0] >= cap).all(), (sign, units)  # lands in the other cap
            assert (np.linalg.norm(new, axis=1) <= 1 + 1e-12).all()
    # v_1 = e_1 and v_-1 = -e_1, and the caps around them, are uncovered at every level (exact)
    for theta in [(1.0, 0.0), (-1.0, 0.0), *cap_points(cap, 1, 4), *cap_points(cap, -1, 4)]:
        for level in LEVELS:
            assert t.coverage(theta, level)["all"] >= 1 - 1e-9
    assert t.coverage(t.theta.numpy(), 2.0)["all"] == 0  # while pi_D itself covers
    # the typical event: all T samples typical w.p. pi_D(0)^{TH} >= 1/2
    p0 = math.exp(t.step_log_probs(np.zeros((1, 1), np.int64), zeros)[0, 0, 1])
    assert t.typical_probability == pytest.approx(p0 ** (t.params.n * horizon)) and t.typical_probability >= 0.5


def test_sequence_sgd_above_the_threshold_oscillates_between_the_caps_on_sampled_data():
    t = instance("I.6", 16, n=256)
    batch = t.sample(256, 16, np.random.default_rng(3))
    assert (batch.response == 1).all()  # the typical event, which has probability >= 1/2
    for units in (THRESHOLD, 50.0):
        path = trajectory(t, units, batch)
        assert (np.abs(path[:, 0]) >= t.params.cap).all()
        assert (np.sign(path[1:, 0]) == -np.sign(path[:-1, 0])).all()  # every step crosses to the other cap
        for theta in path[::37]:
            assert t.coverage(theta, 16.0)["all"] >= 1 - 1e-9


# ---- Lemma I.7 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("horizon", [8, 64, 256])
def test_rare_frequency_keeps_the_rare_prompts_uncovered_with_probability_one_half(horizon):
    t = instance("I.7", horizon)
    T, p, R = t.params.n, t.rare_weight, t.rare_allowed
    assert stats.binom.cdf(R, T, p) * t.loud_all_plus >= 0.5
    # R rare samples, each moving theta_2 by the most it can, plus the projection drift, stay short of theta_c
    assert -t.params.theta_rare + R * t.step_bound + t.drift < t.theta_c
    start = np.array(t.params.start)
    uncovered = start + np.array([0.0, R * t.step_bound + t.drift])
    assert (
        t.coverage(uncovered, t.params.level)["rare"] >= math.exp(t.token_log_probs_at(t.theta.numpy())[1, 2]) - 1e-12
    )
    assert t.coverage(uncovered, t.params.level)["all"] >= t.floor - 1e-12
    # the floor is a constant fraction of H/(T log N), the paper's bound, at every horizon of the study
    assert t.floor >= 0.25 * min(horizon / (T * math.log(t.params.level)), 1)
    assert t.coverage(t.theta.numpy(), 2.0)["all"] == 0


@pytest.mark.parametrize("units", [THRESHOLD, 1.0])
def test_small_steps_move_the_rare_coordinate_at_most_the_bound_per_rare_sample(units):
    t = instance("I.7", 64, n=1024)
    batch = t.sample(1024, 64, np.random.default_rng(5))
    path = trajectory(t, units, batch)
    rare_seen = np.concatenate([[0], np.cumsum(batch.cls == 1)])  # R_t
    moved = path[:, 1] - path[0, 1]
    assert (np.abs(moved) <= rare_seen * t.step_bound * units / THRESHOLD + t.drift + 1e-6).all()
    if rare_seen[-1] <= t.rare_allowed:  # the event of probability >= 1/2: uncovered at every t
        for theta in path[::64]:
            assert t.coverage(theta, t.params.level)["all"] >= t.floor - 1e-12


def test_the_worst_case_rare_sequence_still_leaves_the_rare_prompts_uncovered():
    """R rare samples, all with y_1 = +1 (the largest push), after loud ones: uncovered throughout."""
    t = instance("I.7", 64, n=256)
    R = t.rare_allowed
    loud = t.sample(256 - R, 64, np.random.default_rng(0), cls=0)
    prompt = np.concatenate([loud.prompt, np.ones((R, 1), np.int64)])
    rare = np.full((R, 64), 1, np.int64)
    rare[:, 0] = 2  # y_1 = +1
    response = np.concatenate([loud.response, rare])
    order = np.random.default_rng(1).permutation(256)
    view, _ = view_of(t, prompt[order], response[order])
    out = sgd(t, THRESHOLD).run(view, view.initial(), list(range(1, 257)))[0]
    for s in range(1, 257):
        assert out[s].theta[1] < t.theta_c
    assert t.coverage(out[256].theta, t.params.level)["all"] >= t.floor - 1e-12


# ---- both: sigma*^2, exact coverage, starting point, config ------------------------------------


def all_responses(horizon):
    return np.array(list(itertools.product(range(3), repeat=horizon)), dtype=np.int64)


@pytest.mark.parametrize("lemma,horizon", [("I.6", 4), ("I.6", 6), ("I.7", 4), ("I.7", 6)])
def test_inherent_variance_is_at_most_one_by_brute_force(lemma, horizon):
    t = instance(lemma, horizon, n=64)
    ys = all_responses(horizon)
    total = 0.0
    for c, w in enumerate(t.class_weights):
        x = np.full((len(ys), 1), c, np.int64)
        p = np.exp(t.sequence_log_probs(x, ys))
        assert p.sum() == pytest.approx(1, abs=1e-12)
        phi = t.features.candidates(t.features.position_inputs(x, ys, t.bos)).numpy()  # (n, H, V, d)
        q = np.exp(t.step_log_probs(x, ys))  # (n, H, V)
        mean = np.einsum("nhv,nhvd->nhd", q, phi)
        total += w * float(p @ np.einsum("nhv,nhv->n", q, ((phi - mean[:, :, None]) ** 2).sum(-1)))
    assert total <= 1
    # the teacher's own sigma*^2 terms, averaged over the enumeration, agree
    mine = sum(
        w
        * float(
            np.exp(t.sequence_log_probs(np.full((len(ys), 1), c), ys))
            @ t.inherent_variance(np.full((len(ys), 1), c), ys).sum(1)
        )
        for c, w in enumerate(t.class_weights)
    )
    assert mine == pytest.approx(total, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("lemma", ["I.6", "I.7"])
def test_exact_coverage_matches_enumeration(lemma):
    t = instance(lemma, 5, n=64)
    ys = all_responses(5)
    rng = np.random.default_rng(0)
    for theta in [np.array(t.params.start), rng.normal(size=2) * 0.3, t.theta.numpy() * 0.9]:
        steps_model = t.token_log_probs_at(theta)
        for level in LEVELS:
            want = 0.0
            for c, w in enumerate(t.class_weights):
                x = np.full((len(ys), 1), c, np.int64)
                ctx = t.features.position_inputs(x, ys, t.bos).numpy()  # (n, H)
                model = np.take_along_axis(steps_model[ctx], ys[..., None], -1)[..., 0].sum(1)
                teacher = t.sequence_log_probs(x, ys)
                want += w * float(np.exp(teacher)[teacher - model >= math.log(level) - 1e-9].sum())
            assert t.coverage(theta, level)["all"] == pytest.approx(want, abs=1e-12)
    assert iid_coverage(np.log([0.2, 0.5, 0.3]), np.log([0.2, 0.5, 0.3]), 7, 2.0) == 0


@pytest.mark.parametrize("lemma", ["I.6", "I.7"])
def test_ar_linear_model_starts_at_the_instance_starting_point(lemma):
    t = instance(lemma, 8, n=64)
    _, model = view_of(t, np.zeros((1, 1), np.int64), np.ones((1, 8), np.int64))
    assert model.theta.detach().double().numpy() == pytest.approx(t.params.start, abs=1e-7)
    plain = build_teacher({"name": "ar_linear", "vocab_size": 3, "dim": 2, "window": 2, "scale": 2.0})
    assert (build_model({"class": "ar_linear"}, Vocab.of(plain, 3), teacher=plain).theta == 0).all()


def test_eta_units_is_eta_in_units_of_one_over_h_b():
    t = instance("I.7", 64)
    assert sgd(t, 2.0).hyper(100)["eta"] == pytest.approx(2 / (64 * t.bound))
    assert not sgd(t, 2.0).budget_dependent()


def study(teacher, learner, horizons=(8,)):
    return {
        "studies": {
            "s": {
                "teacher": teacher,
                "horizons": list(horizons),
                "seeds": 1,
                "data": {"n_train": 64, "n_eval": 8},
                "models": {"m": {"class": "ar_linear", "learner": learner}},
                "train": {"steps": 64, "checkpoints": [64]},
            }
        }
    }


I6 = {"name": "sgd_lower_bound", "lemma": "I.6", "horizon": 8, "n": 64}
BAD = [
    (
        study(I6, {"name": "seq_sgd", "eta_units": 2}),
        "studies.s.models.m.learner.eta_units: 2 is on the other side of the threshold eta = 8/(HB); teacher "
        "sgd_lower_bound lemma I.6 is built for eta >= 8/(HB): use a lemma I.7 study",
    ),
    (
        study({**I6, "lemma": "I.7"}, {"name": "seq_sgd", "eta_units": 9}),
        "studies.s.models.m.learner.eta_units: 9 is on the other side",
    ),
    (
        study(I6, {"name": "seq_sgd", "eta_units": 8, "eta": 0.1}),
        "studies.s.models.m.learner.eta_units: give eta_units (eta in units of 1/(HB)) or eta/eta_scale, not both",
    ),
    (
        study(I6, {"name": "seq_sgd"}, horizons=(8, 16)),
        "studies.s.teacher.horizon: this instance is built for H = 8 and cannot serve horizon 16; give each horizon "
        "its own study",
    ),
    (
        study({**I6, "start": [1, 1]}, {"name": "seq_sgd"}),
        "studies.s.teacher.start: expected 2 numbers in the unit ball, got [1.0, 1.0]",
    ),
]


@pytest.mark.parametrize("cfg,message", BAD, ids=range(len(BAD)))
def test_bad_lower_bound_config_gets_one_line_naming_the_key(cfg, message):
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, source="c.yaml")
    assert "\n" not in str(err.value) and str(err.value).startswith("c.yaml: " + message)


def test_validated_config_records_the_starting_point():
    out = validate_config(study(I6, {"name": "seq_sgd", "eta_units": 16}))["studies"]["s"]
    assert out["teacher"]["start"] == [1.0, 0.0]
    assert out["models"]["m"]["train"]["learner"]["eta_units"] == 16
    plain = validate_config(study(I6, {"name": "seq_sgd"}))["studies"]["s"]
    assert "eta_units" not in plain["models"]["m"]["train"]["learner"]  # other seq_sgd specs are unchanged
