"""Learners, by name: the paper's training algorithms for the autoregressive linear class (and any
differentiable model). A new learner is one module plus one line in LEARNERS.

A study picks one per model entry, `models.m.learner: {name: seq_sgd, ...}` (short for
`models.m.train.learner`), or for all its models in `train.learner`. Without one, training is the
optimizer loop of `covpipe.train` (Adam/AdamW/SGD on the mean per-token NLL), unchanged.
With a learner, `train.steps` is the sample budget in *sequences* (one pass, at most
data.n_train) and checkpoints count sequences too; train.optimizer, lr, batch_size and
weight_decay are not read (the learner's own parameters set them).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .base import Learner, Problem
from .distill import DistillTruncated
from .mle import MLEExact
from .sgd import Adam, NormalizedSGD, SeqSGD, SignSGD
from .token import TokenSGD
from .ttt import TTT
from .views import view_of

VERSION = 1  # bump when a change alters what a learner or the TTT decoder computes

LEARNERS: dict[str, type[Learner]] = {
    "adam": Adam,
    "distill_truncated": DistillTruncated,
    "mle_exact": MLEExact,
    "normalized_sgd": NormalizedSGD,
    "seq_sgd": SeqSGD,
    "sign_sgd": SignSGD,
    "token_sgd": TokenSGD,
}
TRAIN_LOSS_SEQUENCES = 2048  # the logged training NLL reads at most this many sequences


def get_learner(name: str) -> type[Learner]:
    """The learner class registered under `name`."""
    try:
        return LEARNERS[name]
    except KeyError:
        raise KeyError(f"unknown learner '{name}'; known: {', '.join(sorted(LEARNERS))}") from None


def build_learner(spec: dict, problem: Problem, has_bound: bool) -> Learner:
    """A learner from its config slice, e.g. {"name": "seq_sgd", "eta": "paper"}."""
    cls = get_learner(spec["name"])
    return cls(cls.Params.model_validate(spec), problem, has_bound)


def check_learner(params, model_cls, teacher, train: dict, n_train: int) -> None:
    """Raise ValueError('key: message') where a validated learner cannot run as configured."""
    cls = LEARNERS[params["name"]]
    if not model_cls.trainable:
        raise ValueError(f"name: {params['name']} needs a model trained by gradients; "
                         f"class '{model_cls.Params.model_fields['cls'].default}' is fitted by counting")
    paper = [k for k in ("eta", "lam") if params.get(k) == "paper"]
    if paper and "bound" in cls.needs and getattr(model_cls, "feature_bound", None) is None:
        raise ValueError(f"{paper[0]}: the paper's rule needs a model with a feature bound B (ar_linear); give a number")
    if paper and "sigma2" in cls.needs and not hasattr(teacher, "inherent_variance"):
        raise ValueError(f"{paper[0]}: the paper's rule needs sigma*^2, which teacher '{teacher.params.name}' "
                         "does not compute; give a number")
    if params.get("eta_units") is not None and hasattr(teacher, "check_step"):
        teacher.check_step(params["eta_units"])  # a lower-bound instance serves one side of eta = 8/(HB)
    if train["steps"] > n_train:
        raise ValueError(f"name: learners make one pass over the sample: train.steps={train['steps']} sequences "
                         f"exceeds data.n_train={n_train}")
    k = int(params.get("batch_size", 1))
    bad = [c for c in train["checkpoints"] if c % k]
    if bad:
        raise ValueError(f"batch_size: checkpoints count sequences and must be multiples of K={k}, got {bad[0]}")


def fit(spec: dict, model, teacher, prompt: torch.Tensor, response: torch.Tensor, seed: int) -> dict:
    """Train one seed with the spec's learner. Returns the train trial's result:
    {"checkpoints": {s: state_dict}, "log": [row, ...], "learner": {s: resolved hyperparameters}}."""
    started = time.perf_counter()
    cfg = spec["train"]
    prompt, response = prompt.cpu(), response.cpu()
    view = view_of(model, prompt, response)
    bound = getattr(model, "feature_bound", None)
    sigma2 = None
    if hasattr(teacher, "inherent_variance"):
        # sigma*^2 (paper Eq. 8), estimated on the training sample y ~ pi_D: the paper's rules read it.
        sigma2 = float(teacher.inherent_variance(prompt.numpy(), response.numpy()).sum(1).mean())
    problem = Problem(spec["horizon"], bound, sigma2,
                      teacher_steps=lambda: teacher.step_log_probs(prompt.numpy(), response.numpy()))
    learner = build_learner(cfg["learner"], problem, has_bound=bound is not None)
    theta0 = view.initial()
    results = learner.run(view, theta0, list(cfg["checkpoints"]))
    checkpoints, rows, info = {}, [], {}
    seconds = time.perf_counter() - started
    for s, (theta, hyper) in sorted(results.items()):
        view.load(theta)
        checkpoints[s] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        nll = -float(view.log_likelihood(theta, np.arange(min(s, TRAIN_LOSS_SEQUENCES))).mean())  # nats/token
        if not np.isfinite(theta).all() or not np.isfinite(nll):
            raise FloatingPointError(f"{spec['model_name']} horizon {spec['horizon']} seed {seed}: "
                                     f"{learner.name} diverged by checkpoint {s}")
        rows.append({"seed": seed, "step": s, "train_loss": nll, "seconds": seconds})
        info[s] = hyper
    return {"checkpoints": checkpoints, "log": rows, "learner": info}


def variants(spec: dict, model, info: dict | None) -> list[tuple[str, object]]:
    """The decoders evaluated beside the trained model itself: [(model name, model-like), ...].
    token_sgd with ttt: the test-time-training model, named '<model>+ttt', with the eta and
    radius its training used (paper Thm 6.1 requires the same eta)."""
    learner = (spec["train"] or {}).get("learner") or {}
    if learner.get("name") == "token_sgd" and learner.get("ttt", True) and info:
        return [(f"{spec['model_name']}+ttt", TTT(model, info["eta"], info["radius"]))]
    return []
