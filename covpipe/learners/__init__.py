"""Learners, by name: the paper's training algorithms for the autoregressive linear class (and any
differentiable model). A new learner is one module plus one line in LEARNERS, or an entry point of
group `covpipe.learners` in another package (covpipe.registry).

A study picks one per model entry, `models.m.learner: {name: seq_sgd, ...}` (short for
`models.m.train.learner`), or for all its models in `train.learner`. Without one, training is the
optimizer loop of `covpipe.train` (Adam/AdamW/SGD on the mean per-token NLL), unchanged.
With a learner, `train.steps` is the sample budget in *sequences* (one pass, at most
data.n_train) and checkpoints count sequences too; train.optimizer, lr, batch_size and
weight_decay are not read (the learner's own parameters set them).
"""

from __future__ import annotations

from ..registry import Registry
from .base import Learner
from .distill import DistillTruncated
from .mle import MLEExact
from .sgd import Adam, NormalizedSGD, SeqSGD, SignSGD
from .token import TokenSGD

LEARNERS: Registry = Registry(
    "learner",
    "covpipe.learners",
    "name",
    {
        "adam": Adam,
        "distill_truncated": DistillTruncated,
        "mle_exact": MLEExact,
        "normalized_sgd": NormalizedSGD,
        "seq_sgd": SeqSGD,
        "sign_sgd": SignSGD,
        "token_sgd": TokenSGD,
    },
)


def get_learner(name: str) -> type[Learner]:
    """The learner class registered under `name`."""
    return LEARNERS.lookup(name)


def check_learner(params, model_cls, teacher, train: dict, n_train: int) -> None:
    """Raise ValueError('key: message') where a validated learner cannot run as configured."""
    cls = LEARNERS[params["name"]]
    if not model_cls.trainable:
        raise ValueError(
            f"name: {params['name']} needs a model trained by gradients; "
            f"class '{model_cls.Params.model_fields['cls'].default}' is fitted by counting"
        )
    paper = [k for k in ("eta", "lam") if params.get(k) == "paper"]
    if paper and "bound" in cls.needs and not model_cls.has_feature_bound:
        raise ValueError(
            f"{paper[0]}: the paper's rule needs a model with a feature bound B (ar_linear); give a number"
        )
    if paper and "sigma2" in cls.needs and not hasattr(teacher, "inherent_variance"):
        raise ValueError(
            f"{paper[0]}: the paper's rule needs sigma*^2, which teacher '{teacher.params.name}' "
            "does not compute; give a number"
        )
    if params.get("eta_units") is not None and hasattr(teacher, "check_step"):
        teacher.check_step(params["eta_units"])  # a lower-bound instance serves one side of eta = 8/(HB)
    if train["steps"] > n_train:
        raise ValueError(
            f"name: learners make one pass over the sample: train.steps={train['steps']} sequences "
            f"exceeds data.n_train={n_train}"
        )
    k = int(params.get("batch_size", 1))
    bad = [c for c in train["checkpoints"] if c % k]
    if bad:
        raise ValueError(f"batch_size: checkpoints count sequences and must be multiples of K={k}, got {bad[0]}")
