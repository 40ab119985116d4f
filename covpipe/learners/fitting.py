"""Training with a learner: every seed of a job in one pass over its sample (`fit_seeds`), and
the decoders evaluated beside a trained model (`variants`). The registry of learners and the
checks config validation runs are in `covpipe.learners` (which imports no torch)."""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from ..training import cpu_state
from . import get_learner
from .base import Iterate, Learner, Problem
from .context import ContextView, has_context_form
from .ttt import TTT
from .views import view_of

TRAIN_LOSS_SEQUENCES = 2048  # the logged training NLL reads at most this many sequences


def build_learner(spec: dict, problem: Problem, has_bound: bool) -> Learner:
    """A learner from its config slice, e.g. {"name": "seq_sgd", "eta": "paper"}."""
    cls = get_learner(spec["name"])
    return cls(cls.Params.model_validate(spec), problem, has_bound)


def fit(spec: dict, model, teacher, prompt: torch.Tensor, response: torch.Tensor, seed: int) -> dict:
    """Train one seed with the spec's learner. Returns the train trial's result:
    {"checkpoints": {s: state_dict}, "log": [row, ...], "learner": {s: resolved hyperparameters}}."""
    return fit_seeds(spec, [model], teacher, [prompt], [response], [seed])[0]


def batched(spec: dict, model) -> bool:
    """Whether all seeds of a learner job train as one computation (`ContextView`): an AR-linear
    model whose features read finitely many contexts. Other models train one seed per trial."""
    return bool((spec["train"] or {}).get("learner")) and has_context_form(model)


def fit_seeds(spec: dict, models: list, teacher, prompts: list, responses: list, seeds: list) -> list[dict]:
    """Train every seed (its own model instance and sample) with the spec's learner, as one batched
    computation where the model has a finite-context form (else exactly one seed). Returns one
    train-trial result per seed (see `fit`), with a checkpoint at step 0 (the start) before the
    configured ones; each checkpoint's hyperparameters also hold its average iterate (`average`,
    a float64 tensor (P,)) for learners that iterate."""
    started = time.perf_counter()
    cfg = spec["train"]
    prompts = [p.cpu() for p in prompts]
    responses = [r.cpu() for r in responses]
    model = models[0]
    if has_context_form(model):
        view = ContextView(model, [p.numpy() for p in prompts], [r.numpy() for r in responses])
        _attach_teacher_context(view, model, teacher, prompts[0].numpy(), responses[0].numpy())
        theta0 = np.stack([m.theta.detach().cpu().double().numpy() for m in models])  # each seed's start
    else:
        if len(seeds) != 1:
            raise ValueError("seeds train as one computation only for models with a finite-context form")
        view = view_of(model, prompts[0], responses[0])
        theta0 = view.initial()
    bound = getattr(model, "feature_bound", None)
    problems = [_problem(spec, teacher, bound, p.numpy(), r.numpy()) for p, r in zip(prompts, responses)]
    learner = build_learner(cfg["learner"], problems[0], has_bound=bound is not None)
    learner.problems = problems
    per_seed = learner.run(view, theta0, list(cfg["checkpoints"]))
    seconds = time.perf_counter() - started
    out = []
    starts = np.broadcast_to(theta0, (len(seeds), np.shape(theta0)[-1]))
    for i, (seed, found) in enumerate(zip(seeds, per_seed)):
        one = view.seed_view(i) if isinstance(view, ContextView) else view
        checkpoints, rows, info = {}, [], {}
        # step 0, the start: the initial model's KL is what "learns" is measured against (docs/results-interventions.md)
        found = {0: Iterate(starts[i].copy(), None, {}), **found}
        for s, it in sorted(found.items()):
            nll = -float(
                one.log_likelihood(it.theta, np.arange(min(max(s, 1), TRAIN_LOSS_SEQUENCES))).mean()
            )  # nats/token
            if not np.isfinite(it.theta).all() or not np.isfinite(nll):
                raise FloatingPointError(
                    f"{spec['model_name']} horizon {spec['horizon']} seed {seed}: "
                    f"{learner.name} diverged by checkpoint {s}"
                )
            view.load(it.theta)
            checkpoints[s] = cpu_state(model)
            rows.append({"seed": seed, "step": s, "train_loss": nll, "seconds": seconds})
            info[s] = {
                **it.hyper,
                **({"average": torch.from_numpy(it.average.copy())} if it.average is not None else {}),
            }
        out.append({"checkpoints": checkpoints, "log": rows, "learner": info})
    return out


def _problem(spec, teacher, bound, prompt: np.ndarray, response: np.ndarray) -> Problem:
    sigma2 = None
    if hasattr(teacher, "inherent_variance"):
        # sigma*^2 (paper Eq. 8), estimated on the training sample y ~ pi_D: the paper's rules read it.
        sigma2 = float(teacher.inherent_variance(prompt, response).sum(1).mean())
    return Problem(spec["horizon"], bound, sigma2, teacher_steps=lambda: teacher.step_log_probs(prompt, response))


def _attach_teacher_context(view: ContextView, model, teacher, prompt, response) -> None:
    """log pi_D per context (K, V), for distillation, where the teacher is the model's own feature
    map at theta* (well-specified): checked against the teacher's own next-token log-probs."""
    theta = getattr(teacher, "theta", None)
    if theta is None or getattr(teacher, "features", None) is not model.features:
        return
    per_context = torch.log_softmax(torch.from_numpy(view.table) @ theta.double(), dim=-1).numpy()  # (K, V)
    k = min(len(prompt), 64)
    direct = teacher.step_log_probs(prompt[:k], response[:k])
    if np.allclose(per_context[view.ctx[0, :k]], direct, atol=1e-9):
        view.teacher_context = per_context


def variants(spec: dict, model, info: dict | None) -> list[tuple[str, object]]:
    """The decoders evaluated beside the trained model itself (its last iterate): [(name, model-like)].

    '<model>+avg': the average iterate (Iterate.average), for every learner that iterates (all but
    mle_exact): the point the paper's online-to-batch bounds are about.
    token_sgd with ttt: the test-time-training model '<model>+ttt' around the last iterate and
    '<model>+avg+ttt' around the average, with the eta and radius training used (Thm 6.1
    requires the same eta)."""
    learner = (spec["train"] or {}).get("learner") or {}
    if not info:
        return []
    name, out, average = spec["model_name"], [], None
    if info.get("average") is not None:
        average = copy.deepcopy(model)
        trainable = [p for p in average.parameters() if p.requires_grad]
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(torch.as_tensor(info["average"], dtype=trainable[0].dtype), trainable)
        out.append((f"{name}+avg", average))
    if learner.get("name") == "token_sgd" and learner.get("ttt", True):
        out.append((f"{name}+ttt", TTT(model, info["eta"], info["radius"])))
        if average is not None:
            out.append((f"{name}+avg+ttt", TTT(average, info["eta"], info["radius"])))
    return out
