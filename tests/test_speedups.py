"""The speed paths compute what the plain paths compute: vectorized seeds, class-grouped
transformer batches, chunked inference-mode evaluation. (Their speed is measured by bench/run.py.)"""

import logging

import numpy as np
import pytest
import torch
from helpers import mini_config

from covpipe import data, resume, specs, train, vectorized
from covpipe.config import validate_config
from covpipe.models import Vocab, build_model, scoring
from covpipe.models import transformer as transformer_module
from covpipe.models.base import as_tensor
from covpipe.teachers import build_teacher

EDGES = {
    "name": "graph",
    "num_nodes": 16,
    "prompt_format": "edges",
    "classes": {"single": 0.5, "xor": 0.3, "uniform4": 0.2},
}


def _study(model: dict, optimizer: str = "adam"):
    cfg = validate_config(
        mini_config(
            teacher={"name": "markov", "vocab_size": 4, "order": 1, "classes": {"a": 0.5, "b": 0.5}},
            seeds=3,
            models={"m": model},
            train={"optimizer": optimizer, "lr": 0.02, "batch_size": 8, "steps": 15, "checkpoints": [5, 15]},
        )
    )
    study = cfg["studies"]["mini"]
    teacher = build_teacher(study["teacher"])
    batches = [teacher.sample(48, 5, np.random.default_rng(s)) for s in range(3)]
    return specs.train_spec("mini", study, "m", 5), batches


@pytest.mark.parametrize(
    "model",
    [{"class": "ar_linear", "dim": 5, "window": 3}, {"class": "gru", "hidden": 8, "embed": 4, "layers": 2}],
    ids=lambda m: m["class"],
)
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_vectorized_training_equals_per_seed_training_within_float_tolerance(model, optimizer):
    spec, batches = _study(model, optimizer)
    assert vectorized.supports(spec)
    together = vectorized.train_seeds(spec, [0, 1, 2], batches)
    for seed, batch in enumerate(batches):
        alone = train.train_trial(spec, seed, batch)
        assert together[seed]["checkpoints"].keys() == alone["checkpoints"].keys() == {5, 15}
        for step, state in alone["checkpoints"].items():
            for name, value in state.items():
                torch.testing.assert_close(together[seed]["checkpoints"][step][name], value, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(
            [r["train_loss"] for r in together[seed]["log"]], [r["train_loss"] for r in alone["log"]], rtol=1e-5
        )


@pytest.mark.parametrize(
    "model",
    [{"class": "ar_linear", "dim": 5, "window": 3}, {"class": "gru", "hidden": 8, "embed": 4}],
    ids=lambda m: m["class"],
)
def test_a_seeds_vectorized_result_does_not_depend_on_its_group(model):
    # Serial jobs train all seeds in one group, Ray jobs in one group per CPU: tables must not differ.
    spec, batches = _study(model)
    ((ok, alone),) = vectorized.train_group(spec, [1], batches[1:2])
    together = vectorized.train_group(spec, [0, 1, 2], batches)[1][1]
    for step, state in alone["checkpoints"].items():
        for name, value in state.items():
            assert torch.equal(together["checkpoints"][step][name], value)


def _graph_model(horizon=3, seed=0):
    teacher = build_teacher(EDGES)
    torch.manual_seed(seed)
    model = build_model(
        {"class": "transformer", "layers": 2, "heads": 2, "width": 16}, Vocab.of(teacher, horizon), teacher=teacher
    )
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)  # away from the init, so attention is not uniform
    batch = teacher.sample(48, horizon, np.random.default_rng(seed))
    return model, as_tensor(batch.prompt), as_tensor(batch.response)


@pytest.mark.parametrize("max_groups", [8, 2])  # 2: groups merged, residual pads masked inside a group
def test_class_grouped_transformer_loss_equals_the_padded_loss(monkeypatch, max_groups):
    monkeypatch.setattr(transformer_module, "MAX_GROUPS", max_groups)
    model, prompt, response = _graph_model()
    assert len(model.leading_pads(prompt).unique()) >= 3  # prompts of unequal length: there is padding to skip
    grouped = model.step_log_probs(prompt, response)
    padded = model.step_log_probs(prompt, response, grouped=False)
    torch.testing.assert_close(grouped, padded, rtol=1e-5, atol=1e-5)
    loss = -grouped.gather(-1, response[..., None]).mean()
    loss_padded = -padded.gather(-1, response[..., None]).mean()
    params = list(model.parameters())
    for a, b in zip(torch.autograd.grad(loss, params), torch.autograd.grad(loss_padded, params)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_a_rows_log_probs_do_not_depend_on_its_batch_mates_padding():
    model, prompt, response = _graph_model()
    shortest = int(model.leading_pads(prompt).argmax())
    alone = model.step_log_probs(prompt[shortest : shortest + 1], response[shortest : shortest + 1])
    in_batch = model.step_log_probs(prompt, response, grouped=False)[shortest : shortest + 1]
    torch.testing.assert_close(alone, in_batch, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prompt_format", ["edges", "layers"])  # edges: left-padded prompts, pads masked as keys
def test_the_kv_cached_sampler_draws_what_the_full_pass_sampler_draws(prompt_format):
    teacher = build_teacher({**EDGES, "prompt_format": prompt_format})
    horizon = 3  # the most this 16-node graph holds
    torch.manual_seed(1)
    model = build_model(
        {"class": "transformer", "layers": 2, "heads": 2, "width": 16}, Vocab.of(teacher, horizon), teacher=teacher
    )
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)  # far from uniform next-token distributions: a wrong cache changes the draws
    prompt = as_tensor(teacher.sample(64, horizon, np.random.default_rng(2)).prompt)
    assert (prompt_format == "edges") == bool(model.leading_pads(prompt).any())
    length = teacher.response_length(horizon)
    cached = model.sample(prompt, length, torch.Generator().manual_seed(3))
    full = model.sample(prompt, length, torch.Generator().manual_seed(3), cached=False)
    assert torch.equal(cached, full)
    assert len({tuple(r) for r in cached.tolist()}) > 8  # the draws vary: the comparison is not vacuous


@pytest.mark.parametrize("which", ["transformer", "gru"])
def test_chunked_inference_evaluation_equals_a_per_sequence_loop(which):
    if which == "transformer":
        model, prompt, response = _graph_model()
    else:
        teacher = build_teacher({"name": "markov", "vocab_size": 4, "order": 1})
        batch = teacher.sample(48, 6, np.random.default_rng(0))
        torch.manual_seed(0)
        model = build_model({"class": "gru", "hidden": 8, "embed": 4}, Vocab.of(teacher, 6))
        prompt, response = as_tensor(batch.prompt), as_tensor(batch.response)
    batched = scoring.model_step_log_probs(model, prompt, response, chunk=16)
    with torch.no_grad():
        loop = np.concatenate(
            [model.step_log_probs(prompt[i : i + 1], response[i : i + 1]).double().numpy() for i in range(len(prompt))]
        )
    np.testing.assert_allclose(batched, loop, rtol=1e-5, atol=1e-5)


def test_a_diverging_seed_fails_alone_and_its_group_mates_train_as_without_it(monkeypatch):
    spec, batches = _study({"class": "gru", "hidden": 8, "embed": 4})
    clean = vectorized.train_group(spec, [0, 1, 2], batches)
    make_inputs, token_log_probs = vectorized.STACKED["gru"]
    calls = []

    def nan_for_seed_1_from_step_3(model, params, batch):
        out = token_log_probs(model, params, batch)
        calls.append(1)
        if len(calls) >= 3:
            out = out.clone()
            out[1] = float("nan")
        return out

    monkeypatch.setitem(vectorized.STACKED, "gru", (make_inputs, nan_for_seed_1_from_step_3))
    hurt = vectorized.train_group(spec, [0, 1, 2], batches)
    assert hurt[1] == (False, "FloatingPointError: m horizon 5 seed 1: loss is nan at step 3\n")
    for i in (0, 2):
        for step, state in clean[i][1]["checkpoints"].items():
            for name, value in state.items():
                assert torch.equal(hurt[i][1]["checkpoints"][step][name], value)


@pytest.mark.parametrize(
    "model",
    [{"class": "ar_linear", "dim": 5, "window": 3}, {"class": "gru", "hidden": 8, "embed": 4}],
    ids=lambda m: m["class"],
)
def test_a_resumed_vectorized_group_ends_identical_to_an_uninterrupted_one(tmp_path, caplog, model):
    spec, batches = _study(model)  # 15 steps, checkpoints at 5 and 15
    fresh = vectorized.train_group(spec, [0, 1, 2], batches)
    short = {**spec, "train": {**spec["train"], "steps": 5, "checkpoints": [5]}}
    vectorized.train_group(short, [0, 1, 2], batches, resume_dir=tmp_path)
    at_five = {}
    for seed in range(3):  # the states of `spec` after 5 of its 15 steps (same batches, same optimizer)
        state = torch.load(resume.trial_path(tmp_path, seed), weights_only=True)
        state["spec"] = spec
        torch.save(state, resume.trial_path(tmp_path, seed))
        at_five[seed] = resume.trial_path(tmp_path, seed).read_bytes()
    resumed = vectorized.train_group(spec, [0, 1, 2], batches, resume_dir=tmp_path)
    for (_, want), (_, got) in zip(fresh, resumed):
        assert [r["train_loss"] for r in got["log"]] == [r["train_loss"] for r in want["log"]]
        for step, state in want["checkpoints"].items():
            for name, value in state.items():
                assert torch.equal(got["checkpoints"][step][name], value)
    # The states are train_trial's format: a per-seed trial resumes from the step-5 state as well and
    # ends where an uninterrupted per-seed trial ends (vectorized and per-seed arithmetic agree
    # within float tolerance, as test_vectorized_training_equals_per_seed_training checks).
    resume.trial_path(tmp_path, 1).write_bytes(at_five[1])
    with caplog.at_level(logging.INFO, logger="covpipe.training"):
        per_seed = train.train_trial(spec, 1, batches[1], resume_dir=tmp_path)
    assert "m H=5 seed 1: resumed at step 5/15" in caplog.text
    uninterrupted = train.train_trial(spec, 1, batches[1])
    assert [r["step"] for r in per_seed["log"]] == [r["step"] for r in uninterrupted["log"]] == [5, 15]
    np.testing.assert_allclose(
        [r["train_loss"] for r in per_seed["log"]], [r["train_loss"] for r in uninterrupted["log"]], rtol=1e-5
    )
    for step, state in uninterrupted["checkpoints"].items():
        for name, value in state.items():
            torch.testing.assert_close(per_seed["checkpoints"][step][name], value, rtol=1e-4, atol=1e-5)


def test_a_job_with_a_registered_learner_is_not_vectorized():
    spec, _ = _study({"class": "ar_linear", "dim": 5, "window": 3})
    assert vectorized.supports(spec)
    assert not vectorized.supports({**spec, "train": {**spec["train"], "learner": {"name": "seq_sgd"}}})


@pytest.mark.parametrize("teacher", ["kl_lower_bound", "sgd_two_scales"])
def test_ar_linear_on_a_hard_instance_trains_per_seed_and_finishes(tmp_path, teacher):
    """The hard instances give ar_linear their own table features, which have no context window for
    the vectorized AR-linear path to read: such a job trains seed by seed and finishes."""
    cfg = validate_config(
        mini_config(
            teacher={"name": teacher},
            horizons=[4],
            seeds=2,
            models={"m": {"class": "ar_linear"}},
            train={"optimizer": "sgd", "lr": 0.1, "batch_size": 8, "steps": 6, "checkpoints": [6]},
        )
    )
    study = cfg["studies"]["mini"]
    spec = specs.train_spec("mini", study, "m", 4)
    assert not vectorized.supports(spec)
    assert vectorized.supports(
        specs.train_spec(
            "mini",
            validate_config(
                mini_config(
                    teacher={"name": "ar_linear", "vocab_size": 3, "dim": 4, "window": 2},
                    horizons=[4],
                    models={"m": {"class": "ar_linear"}},
                )
            )["studies"]["mini"],
            "m",
            4,
        )
    )  # window features: vectorized
    data.run(tmp_path / "train.parquet", tmp_path / "eval.parquet", specs.data_spec("mini", study, 4))
    train.run(tmp_path / "train.parquet", tmp_path / "c.pt", tmp_path / "l.parquet", spec, backend="serial")
    trials = torch.load(tmp_path / "c.pt", weights_only=True)["trials"]
    assert sorted(trials) == [0, 1] and all(sorted(t) == [6] for t in trials.values())


def test_table_only_stages_do_not_import_torch():
    """aggregate and plot read and write tables only: their modules load neither torch (about a second
    of every such job's start) nor numba; a stage that needs torch still gets it where it is used."""
    import subprocess
    import sys

    code = (
        "import sys, covpipe.aggregate, covpipe.plots, covpipe.cli; "
        "print(sorted(m for m in ('torch', 'numba', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out
