"""The `rule_mixture` model against closed forms: a path's probability is the sum over the rules
that allow it, sum_c w_c pi_c(y|x), and everything else follows from that."""

import math

import numpy as np
import pytest
import torch

from covpipe.config import ConfigError, validate_config
from covpipe.models import Vocab, build_model
from covpipe.models.base import as_tensor
from covpipe.specs import finetune_spec
from covpipe.teachers import build_teacher

FIG1 = {
    "name": "graph",
    "num_nodes": 50,
    "prompt_format": "layers",
    "response_format": "path",
    "classes": {"match": 1 / 3, "mismatch": 1 / 3, "uniform4": 1 / 3},
}


def _model(teacher, weights=None, horizon=8):
    model = build_model({"class": "rule_mixture"}, Vocab.of(teacher, horizon), teacher=teacher)
    if weights is not None:
        with torch.no_grad():
            model.logits.copy_(torch.log(torch.tensor(weights, dtype=torch.float64)))
    return model


def _four_paths(teacher, n=64, seed=0):
    batch = teacher.sample(n, 8, np.random.default_rng(seed))
    paths = teacher.branch_choice_paths(batch.prompt)  # (n, 4, L): [mm, mx, xm, xx]
    return batch, paths


def _path_probs(model, batch, paths):
    n, k, length = paths.shape
    lp = model.token_log_probs(as_tensor(np.repeat(batch.prompt, k, 0)), as_tensor(paths.reshape(n * k, length)))
    return lp.sum(1).exp().detach().numpy().reshape(n, k)


@pytest.mark.parametrize("fmt", ["path", "pairs"])
@pytest.mark.parametrize("weights", [(1 / 3, 1 / 3, 1 / 3), (0.7, 0.2, 0.1), (0.05, 0.05, 0.9)])
def test_path_probability_is_the_sum_over_the_rules_that_allow_it(weights, fmt):
    teacher = build_teacher({**FIG1, "response_format": fmt})
    batch, paths = _four_paths(teacher)
    q = _path_probs(_model(teacher, weights), batch, paths)
    w_m, w_x, w_u = weights
    expected = [w_m + w_u / 4, w_u / 4, w_u / 4, w_x + w_u / 4]  # mm, mx, xm, xx
    assert np.allclose(q, np.broadcast_to(expected, q.shape), rtol=0, atol=1e-12)


def test_invalid_paths_get_no_mass_and_next_token_distributions_are_normalized():
    teacher = build_teacher(FIG1)
    batch, paths = _four_paths(teacher, n=32)
    model = _model(teacher, (0.5, 0.3, 0.2))
    steps = model.step_log_probs(as_tensor(batch.prompt), as_tensor(batch.response)).double()  # (n, L, V)
    assert torch.allclose(steps.exp().sum(-1), torch.ones(steps.shape[:2], dtype=torch.float64), atol=1e-6)
    # The second branching choice after a match first choice: (w_m + w_u/4) / (w_m + w_u/2).
    q = _path_probs(model, batch, paths)
    assert np.allclose(q[:, 0] / (q[:, 0] + q[:, 1]), (0.5 + 0.05) / (0.5 + 0.1))
    bad = batch.response.copy()
    bad[:, 1] = batch.response[:, 2]  # a node of the wrong layer
    assert torch.isneginf(model.token_log_probs(as_tensor(batch.prompt), as_tensor(bad)).sum(1)).all()


def test_uniform_weights_are_the_maximum_likelihood_fit_of_the_pretraining_mixture():
    # Under the uniform G_1/G_2/G_3 mixture the four path types have probabilities 5/12, 1/12,
    # 1/12, 5/12 whatever the prompt: the expected log-likelihood gradient vanishes at w = 1/3,
    # and not at other weights.
    teacher = build_teacher(FIG1)
    batch, paths = _four_paths(teacher, n=16)
    mix = torch.tensor([5 / 12, 1 / 12, 1 / 12, 5 / 12], dtype=torch.float64)
    for weights, stationary in (((1 / 3, 1 / 3, 1 / 3), True), ((0.5, 0.3, 0.2), False)):
        model = _model(teacher, weights)
        n, k, length = paths.shape
        lp = model.token_log_probs(as_tensor(np.repeat(batch.prompt, k, 0)), as_tensor(paths.reshape(n * k, length)))
        (-(lp.sum(1).view(n, k) * mix).sum(1).mean()).backward()
        assert (model.logits.grad.abs().max().item() < 1e-12) == stationary


def test_branch_agreement_is_five_sixths_at_the_pretraining_mixture():
    teacher = build_teacher(FIG1)
    batch, paths = _four_paths(teacher, n=8)
    q = _path_probs(_model(teacher), batch, paths)
    assert np.allclose((q[:, 0] + q[:, 3]) / q.sum(1), 5 / 6)


def test_samples_follow_the_model_probabilities():
    teacher = build_teacher(FIG1)
    batch, paths = _four_paths(teacher, n=1)
    model = _model(teacher, (0.6, 0.1, 0.3))
    draws = model.sample(as_tensor(np.repeat(batch.prompt, 4000, 0)), paths.shape[2], torch.Generator().manual_seed(0))
    freq = (draws.numpy()[:, None, :] == paths[0][None]).all(-1).mean(0)  # (4,)
    expected = np.array([0.6 + 0.075, 0.075, 0.075, 0.1 + 0.075])
    assert freq.sum() == 1.0
    assert np.all(np.abs(freq - expected) < 4 * np.sqrt(expected * (1 - expected) / 4000))


def test_adam_on_finetuning_data_moves_the_weights_towards_the_majority_rule():
    teacher = build_teacher({**FIG1, "classes": {"match": 0.9, "mismatch": 0.1}})
    model = _model(teacher)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    rng = np.random.default_rng(0)
    for _ in range(200):
        b = teacher.sample(64, 8, rng)
        loss = -model.token_log_probs(as_tensor(b.prompt), as_tensor(b.response)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = model.weights()
    assert w[0] > 0.8 and 0.05 < w[1] < 0.15 and w[2] < 0.05, w


def _study(**model):
    return {
        "studies": {
            "ft": {
                "teacher": FIG1,
                "horizons": [8],
                "seeds": 1,
                "models": {"mix": {"class": "rule_mixture", **model}},
                "train": {"optimizer": "adamw", "lr": 0.001, "steps": 10, "checkpoints": [10]},
                "finetune": {
                    "teacher": {"classes": {"match": 0.9, "mismatch": 0.1}},
                    "train": {"optimizer": "adamw", "lr": 1e-5, "steps": 20, "checkpoints": [10, 20]},
                },
            }
        }
    }


def test_a_model_may_carry_its_own_finetuning_settings():
    cfg = validate_config(_study(finetune={"optimizer": "adam", "lr": 0.003}))
    spec = finetune_spec("ft", cfg["studies"]["ft"], "mix", 8)
    assert spec["train"]["optimizer"] == "adam" and spec["train"]["lr"] == 0.003
    assert spec["train"]["steps"] == 20 and spec["train"]["checkpoints"] == [10, 20]
    assert "finetune" not in spec["model"] and "finetune" not in spec["pretrain"]["model"]
    plain = finetune_spec("ft", validate_config(_study())["studies"]["ft"], "mix", 8)
    assert plain["train"]["lr"] == 1e-5


def test_bad_model_finetuning_settings_are_refused_by_key():
    with pytest.raises(ConfigError, match=r"studies\.ft\.models\.mix\.finetune\.lr: Input should be greater than 0"):
        validate_config(_study(finetune={"lr": -1.0}))
    no_ft = _study(finetune={"lr": 0.1})
    del no_ft["studies"]["ft"]["finetune"]
    with pytest.raises(ConfigError, match=r"studies\.ft\.models\.mix\.finetune: this study has no finetune section"):
        validate_config(no_ft)


def test_rule_mixture_refuses_teachers_without_class_rules():
    study = _study()
    study["studies"]["ft"]["teacher"] = {"name": "markov", "vocab_size": 4, "order": 1}
    del study["studies"]["ft"]["finetune"]
    with pytest.raises(ConfigError, match=r"studies\.ft\.models\.mix\.class: 'rule_mixture' mixes the graph"):
        validate_config(study)
    assert math.isclose(sum(_model(build_teacher(FIG1)).weights()), 1.0)
