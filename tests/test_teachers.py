"""Every registered teacher: exact probabilities sum to 1 by enumeration, and its sampler
draws from them. Runs over the registry, so a new teacher is tested for free."""

import itertools
import math

import numpy as np
import pytest
import torch

from covpipe.teachers import TEACHERS, build_teacher
from covpipe.teachers.graph import prompt_parity

# Small instances of every teacher, with the horizon their enumeration uses (V^L responses).
SMALL = {
    "markov": [
        ({"name": "markov", "vocab_size": 3, "order": 1, "classes": {"a": 0.25, "b": 0.75}}, 4),
        ({"name": "markov", "vocab_size": 3, "order": 2, "prompt": "empty"}, 4),
        ({"name": "markov", "vocab_size": 4, "order": 0}, 4),
    ],
    "ar_linear": [({"name": "ar_linear", "vocab_size": 3, "dim": 4, "window": 3, "scale": 4.0}, 4)],
    "kl_lower_bound": [
        ({"name": "kl_lower_bound", "n": 2, "scale": 1.0}, 6),
        ({"name": "kl_lower_bound", "n": 1, "scale": 1.5, "theta_sign": -1}, 5),
    ],
    "sgd_two_scales": [({"name": "sgd_two_scales", "rare_weight": 0.4, "rare_tokens": 2}, 5)],
    "sgd_lower_bound": [({"name": "sgd_lower_bound", "lemma": "I.7", "horizon": 5, "n": 16}, 5)],
    "pivotal": [
        (
            {
                "name": "pivotal",
                "vocab_size": 3,
                "dim": 3,
                "pivotal_tokens": 2,
                "pivot_scale": 2.0,
                "scale": 3.0,
                "tail_weight": 0.5,
            },
            4,
        )
    ],
    "graph": [
        # match and uniform4 share their structure: pi_D is their exact posterior mixture.
        ({"name": "graph", "num_nodes": 10, "classes": {"single": 0.5, "match": 0.2, "uniform4": 0.3}}, 2),
        ({"name": "graph", "num_nodes": 10, "classes": {"xor": 0.6, "uniform4": 0.4}, "response_format": "pairs"}, 2),
        (
            {
                "name": "graph",
                "num_nodes": 10,
                "classes": {"single": 0.5, "xor": 0.3, "mismatch": 0.2},
                "prompt_format": "edges",
            },
            2,
        ),
    ],
}


def small_teachers():
    return [
        pytest.param(spec, h, id=f"{spec['name']}-{i}")
        for name in sorted(TEACHERS)
        for i, (spec, h) in enumerate(SMALL[name])
    ]


def test_every_registered_teacher_has_a_small_instance():
    assert set(SMALL) == set(TEACHERS)


def all_responses(vocab, horizon):
    return np.array(list(itertools.product(range(vocab), repeat=horizon)), dtype=np.int64)


@pytest.mark.parametrize("spec,horizon", small_teachers())
def test_probabilities_sum_to_one(spec, horizon):
    t = build_teacher(spec)
    prompts = t.sample(8, horizon, np.random.default_rng(0)).prompt
    length = t.response_length(horizon)
    for x in prompts:  # all 8, each of its own graph
        if t.vocab_size**length <= 100_000:
            ys = all_responses(t.vocab_size, length)
        else:  # every token of the prompt plus one it lacks: mass anywhere else would be a leak too
            alphabet = sorted({int(v) for v in x if v < t.vocab_size})
            alphabet.append(next(v for v in range(t.vocab_size) if v not in alphabet))
            ys = np.array(alphabet)[all_responses(len(alphabet), length)]
        total = np.exp(t.sequence_log_probs(np.repeat(x[None], len(ys), 0), ys)).sum()
        assert total == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("spec,horizon", [p for p in small_teachers() if p.values[0]["name"] != "graph"])
def test_sampler_frequencies_match_probabilities(spec, horizon):
    """Pool samples by prompt; within each prompt seen often, response frequencies match pi_D.
    (Graph prompts never repeat: test_graph_sampler_takes_each_branch_pattern_as_often_as_pi_d_says.)"""
    t = build_teacher(spec)
    sampled = t.sample(30_000, horizon, np.random.default_rng(2))
    length = t.response_length(horizon)
    keys, inverse, counts = np.unique(sampled.prompt, axis=0, return_inverse=True, return_counts=True)
    checked = 0
    for k in np.argsort(-counts)[:3]:
        if counts[k] < 500:
            break
        ys = sampled.response[inverse.ravel() == k]
        x = keys[k]
        grid = all_responses(t.vocab_size, length)
        probs = np.exp(t.sequence_log_probs(np.repeat(x[None], len(grid), 0), grid))
        codes = (ys * t.vocab_size ** np.arange(length)).sum(1)
        freq = np.bincount(codes, minlength=t.vocab_size**length) / len(ys)
        grid_codes = (grid * t.vocab_size ** np.arange(length)).sum(1)
        se = np.sqrt(probs * (1 - probs) / len(ys))
        assert np.all(np.abs(freq[grid_codes] - probs) <= 5 * se + 1e-3)  # 5 standard errors per cell
        checked += 1
    if checked == 0:
        pytest.skip("prompts do not repeat; this teacher has its own sampler test")


@pytest.mark.parametrize("spec,horizon", SMALL["graph"], ids=["layers-mixture", "pairs", "edges"])
def test_graph_sampler_takes_each_branch_pattern_as_often_as_pi_d_says(spec, horizon):
    """Graph prompts never repeat, so the sampler is checked through statistics of (x, y): every valid
    path of x's graph is labelled by its pattern, the option (first or second of the layer's passable
    pair) taken at each branching layer; over 6000 draws, the frequency with which y is the path of
    pattern j matches the mean over the same prompts of pi_D(that path | x), computed exactly, within 5
    standard errors, for every pattern j. The valid paths come from correct_responses of the uniform
    rule (every option at every branching layer) of a teacher with this one's graph layout."""
    t = build_teacher(spec)
    every_path = build_teacher({**spec, "classes": {"uniform4": 1.0}})
    n = 6000
    batch = t.sample(n, horizon, np.random.default_rng(11))
    valid = every_path.correct_responses(batch.prompt, np.zeros(n, dtype=np.int64))  # n arrays (2^k_i, L)
    owner = np.repeat(np.arange(n), [len(r) for r in valid])
    pattern = np.concatenate([[(len(r), j) for j in range(len(r))] for r in valid])  # (paths, 2)
    paths = np.concatenate(valid)
    prob = np.exp(t.sequence_log_probs(batch.prompt[owner], paths))
    assert np.bincount(owner, weights=prob, minlength=n) == pytest.approx(np.ones(n))  # valid paths carry pi_D
    hit = (paths == batch.response[owner]).all(1)
    assert np.bincount(owner, weights=hit, minlength=n).tolist() == [1.0] * n  # every draw is a valid path
    checked = 0
    for key in {tuple(k) for k in pattern}:
        rows = (pattern == key).all(1)  # one path per prompt with 2^k_i = key[0]
        m = int(rows.sum())
        expected = prob[rows].mean()
        se = math.sqrt(max(expected * (1 - expected), 1e-12) / m)
        assert abs(hit[rows].mean() - expected) <= 5 * se + 1e-3, (key, m, hit[rows].mean(), expected)
        checked += key[0] > 1
    assert checked >= 4  # branching graphs were drawn and their patterns checked


@pytest.mark.parametrize("spec,horizon", small_teachers())
def test_same_seed_same_samples(spec, horizon):
    a = build_teacher(spec).sample(50, horizon, np.random.default_rng(7))
    b = build_teacher(spec).sample(50, horizon, np.random.default_rng(7))
    assert (a.response == b.response).all() and (a.prompt == b.prompt).all()


def test_class_is_a_function_of_the_prompt():
    t = build_teacher(SMALL["markov"][0][0])
    batch = t.sample(200, 3, np.random.default_rng(0))
    assert (t.classes_of(batch.prompt) == batch.cls).all()
    assert 0.15 < batch.cls.mean() < 0.95


def test_ar_linear_inherent_variance_matches_brute_force():
    t = build_teacher(SMALL["ar_linear"][0][0])
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


@pytest.mark.parametrize("spec,horizon", [SMALL["graph"][1], SMALL["graph"][2]], ids=["pairs", "edges"])
def test_graph_paths_sampled_for_one_prompt_match_pi_d(spec, horizon):
    """Classes identifiable from the structure: resampling the path of one graph hits pi_D's frequencies."""
    t = build_teacher(spec)
    rng = np.random.default_rng(5)
    for c in range(len(t.class_names)):
        s, tt, layers, passable = t._sample_graph(t.class_names[c], horizon, rng)
        x = np.array(t._format_prompt(s, tt, layers, passable, horizon, rng))
        paths = [
            tuple(t._format_response([s, *t._sample_path(t.class_names[c], passable, rng), tt])) for _ in range(4000)
        ]
        distinct, counts = np.unique(np.array(paths), axis=0, return_counts=True)
        probs = np.exp(t.sequence_log_probs(np.repeat(x[None], len(distinct), 0), distinct))
        assert probs.sum() == pytest.approx(1.0)  # every sampled path, and nothing else, has mass
        se = np.sqrt(probs * (1 - probs) / 4000)
        assert np.all(np.abs(counts / 4000 - probs) <= 5 * se + 1e-3)


def test_graph_mixture_posterior_matches_sampled_class_frequencies():
    """match and uniform4 share a structure; the parity bit of the prompt separates match (bit 1)
    from uniform4's half with bit 0, so pi_D mixes them with prior 0.2 : 0.3 / 2 where the bit is 1."""
    t = build_teacher(SMALL["graph"][0][0])  # single 0.5, match 0.2, uniform4 0.3 at H = 2
    batch = t.sample(6000, 2, np.random.default_rng(3))
    shared = batch.cls > 0
    assert batch.cls[shared].mean() - 1 == pytest.approx(0.3 / 0.5, abs=0.03)
    s, _, passable = t.parse(batch.prompt)
    bit = prompt_parity(s, passable)
    assert (bit[batch.cls == 1] == 1).all()  # every match prompt carries bit 1
    assert bit[batch.cls == 2].mean() == pytest.approx(0.5, abs=0.04)  # uniform4: a fair coin
    # The match-rule path has probability (0.2 * 1 + 0.15 * 1/4) / 0.35 under bit 1, 1/4 under bit 0.
    for b, expected in ((1, (0.2 + 0.15 / 4) / 0.35), (0, 0.25)):
        row = np.flatnonzero(shared & (bit == b))[:1]
        correct = t.correct_responses(batch.prompt[row], np.array([1]))[0]
        assert np.exp(t.sequence_log_probs(batch.prompt[row], correct))[0] == pytest.approx(expected)


@pytest.mark.parametrize("fmt", ["layers", "edges"])
def test_graph_fig1_classes_are_told_apart_only_by_the_prompt_parity(fmt):
    """G_1 / G_2 (match / mismatch): identical structure, opposite parity bit, pi_D deterministic."""
    t = build_teacher(
        {"name": "graph", "num_nodes": 60, "prompt_format": fmt, "classes": {"match": 0.9, "mismatch": 0.1}}
    )
    batch = t.sample(400, 8, np.random.default_rng(1))
    s, _, passable = t.parse(batch.prompt)
    assert ((passable[..., 1] >= 0).sum(1) == 2).all()
    assert (prompt_parity(s, passable) == (batch.cls == 0)).all()
    assert (t.sequence_log_probs(batch.prompt, batch.response) == 0).all()
    assert len(np.unique(batch.prompt[:, 0] if fmt == "layers" else s)) > 20  # s is relabelled, not fixed


@pytest.mark.parametrize("fmt", ["layers", "edges"])
def test_graph_xor_rule_picks_exactly_one_node_per_branching_layer(fmt):
    t = build_teacher({"name": "graph", "num_nodes": 60, "classes": {"xor": 1.0}, "prompt_format": fmt})
    batch = t.sample(200, 8, np.random.default_rng(0))
    s, tt, passable = t.parse(batch.prompt)
    assert (s == batch.response[:, 0]).all() and (tt == batch.response[:, -1]).all()
    assert ((passable[..., 1] >= 0).sum(1) == 4).all()  # H/2 branching layers
    branching = passable[..., 1] >= 0
    assert (passable[..., 0][branching] % 2 == 0).all() and (passable[..., 1][branching] % 2 == 1).all()
    bit = np.where(passable >= 0, passable % 2, 0).sum(axis=(1, 2)) % 2
    chosen_parity = batch.response[:, 1:-1] % 2
    expected = (np.arange(1, 9) % 2)[None, :] ^ bit[:, None]
    assert (chosen_parity[branching] == np.broadcast_to(expected, branching.shape)[branching]).all()
    assert (t.sequence_log_probs(batch.prompt, batch.response) == 0).all()  # deterministic and on-support
    cr = t.correct_responses(batch.prompt, batch.cls)
    assert all(len(r) == 1 and (r[0] == y).all() for r, y in zip(cr, batch.response))


def test_graph_prompts_have_the_documented_structure():
    t = build_teacher({"name": "graph", "num_nodes": 100})
    for h in (8, 16, 24):
        b = t.sample(60, h, np.random.default_rng(h), cls=2)  # uniform16: 4 branching layers
        assert b.prompt.shape == (60, 2 * h + 3) and b.response.shape == (60, h + 2)
        assert (b.prompt[:, -1] == t.EQ).all()
        assert ((b.prompt[:, 1:-2] == t.PAD).sum(1) == h - 4).all()
        assert len({len(r) for r in t.correct_responses(b.prompt, b.cls)}) == 1
        assert len(t.correct_responses(b.prompt[:1], b.cls[:1])[0]) == 16
    e = build_teacher({"name": "graph", "num_nodes": 100, "prompt_format": "edges"})
    b = e.sample(30, 8, np.random.default_rng(0))
    assert b.prompt.shape[1] == e.prompt_length_for(8)
    assert (b.prompt[:, -4] == e.SLASH).all() and (b.prompt[:, -1] == e.EQ).all()
    edges = [(row[row != e.PAD][:-4]) for row in b.prompt]
    single = [len(r[r != e.SEP]) // 2 for r, c in zip(edges, b.cls) if c == 0]
    assert set(single) == {4 + 4 * 7 + 1}  # s -> 4 nodes, 7 layers x 1 passable x 4, last passable -> t


def test_graph_rule_pair_order_puts_the_match_node_first_and_keeps_pi_d():
    spec = {"name": "graph", "num_nodes": 60, "classes": {"match": 0.5, "mismatch": 0.3, "uniform4": 0.2}}
    rule = build_teacher({**spec, "pair_order": "rule"})
    batch = rule.sample(300, 8, np.random.default_rng(2))
    slots = batch.prompt[:, 1:17].reshape(300, 8, 2)
    branching = slots[..., 1] != rule.PAD
    layer_parity = np.broadcast_to(np.arange(1, 9) % 2, (300, 8))
    assert (slots[..., 0][branching] % 2 == layer_parity[branching]).all()
    # The match class always takes the first slot, mismatch the second.
    taken_first = batch.response[:, 1:-1] == slots[..., 0]
    assert taken_first[branching & (batch.cls[:, None] == 0)].all()
    assert not taken_first[branching & (batch.cls[:, None] == 1)].any()
    assert np.allclose(
        rule.sequence_log_probs(batch.prompt, batch.response),
        build_teacher(spec).sequence_log_probs(batch.prompt, batch.response),
    )


@pytest.mark.parametrize("name", ["kl_lower_bound", "sgd_two_scales"])
def test_hard_instance_inherent_variance_matches_enumeration(name):
    spec, horizon = SMALL[name][0]
    t = build_teacher(spec)
    batch = t.sample(6, horizon, np.random.default_rng(1))
    got = t.inherent_variance(batch.prompt, batch.response)
    phi = t.features.candidates(t.features.position_inputs(batch.prompt, batch.response, t.bos)).numpy()  # (n, H, V, d)
    p = np.exp(t.step_log_probs(batch.prompt, batch.response))
    mean = np.einsum("nhv,nhvd->nhd", p, phi)
    assert got == pytest.approx(np.einsum("nhv,nhv->nh", p, ((phi - mean[:, :, None]) ** 2).sum(-1)), abs=1e-12)
    assert (batch.cls == batch.prompt[:, 0]).all()  # the prompt is the class


def test_kl_lower_bound_instance_matches_prop_3_2():
    t = build_teacher({"name": "kl_lower_bound", "n": 10, "scale": 1.0})
    assert t.class_weights[1] == pytest.approx(1 / 20)
    x = np.array([[1], [0]])
    steps = np.exp(t.step_log_probs(x, np.zeros((2, 3), np.int64)))
    assert steps[0, :, 1] == pytest.approx(np.exp(1) / (np.exp(1) + np.exp(-1)))  # P(y = +1 | x = 1) = sigmoid(2)
    assert steps[1] == pytest.approx(0.5)  # x = 0: uniform
    p = np.exp(1) / (np.exp(1) + np.exp(-1))
    assert t.uninformed_kl(7) == pytest.approx(7 / 20 * (p * np.log(2 * p) + (1 - p) * np.log(2 * (1 - p))))


@pytest.mark.parametrize("window", [1, 2, 3])
def test_ar_linear_context_sampler_draws_what_the_prefix_rescoring_sampler_draws(window):
    from covpipe.teachers.base import Teacher

    t = build_teacher({"name": "ar_linear", "vocab_size": 5, "dim": 4, "window": window, "scale": 3.0})
    fast = t.sample(3000, 6, np.random.default_rng(7))
    plain = Teacher.sample(t, 3000, 6, np.random.default_rng(7))
    assert (fast.prompt == plain.prompt).all() and (fast.response == plain.response).all()


def test_pivotal_sigma_star_sq_against_enumeration_and_flat_in_the_horizon():
    """sigma*^2 = E_{pi_D} sum_h ||phi(x, y_1..h) - E_v phi||^2 (paper Eq. 8) by enumerating every (x, y)
    with phi written out from the definition, against the teacher's per-prefix terms; then the point of
    the teacher: sigma*^2 within a factor 2 from H = 8 to H = 256."""
    p = {
        "name": "pivotal",
        "vocab_size": 3,
        "dim": 3,
        "pivotal_tokens": 2,
        "pivot_scale": 2.0,
        "scale": 3.0,
        "tail_weight": 0.5,
    }
    t = build_teacher(p)
    table = t.features.table.numpy().reshape(3, 3, 3, 3)  # (segment, prev, v, d)
    theta = t.theta.numpy()
    assert np.linalg.norm(theta) == pytest.approx(1.0) and np.linalg.norm(table, axis=-1).max() <= 3.0 + 1e-12
    H, brute, mass, total = 4, 0.0, 0.0, 0.0
    for x in range(3):
        for y in itertools.product(range(3), repeat=H):
            prob, terms, prev = 1 / 3, 0.0, x
            for h, v in enumerate(y):
                phi = table[min(h, 2), prev]  # (V, d)
                q = np.exp(phi @ theta - np.log(np.exp(phi @ theta).sum()))
                prob *= q[v]
                mean = q @ phi
                terms += q @ ((phi - mean) ** 2).sum(-1)
                prev = v
            brute += prob * terms
            mass += prob
            total += prob * t.inherent_variance(np.array([[x]]), np.array([y])).sum()
    assert mass == pytest.approx(1.0)
    assert total == pytest.approx(brute, rel=1e-10)
    t = build_teacher({"name": "pivotal"})
    sigma = {}
    for h in (8, 256):
        b = t.sample(4000, h, np.random.default_rng(0))
        sigma[h] = t.inherent_variance(b.prompt, b.response).sum(1).mean()
    assert sigma[256] / sigma[8] < 2
    assert sigma[8] > 10  # the randomness is real: the pivotal positions carry it
