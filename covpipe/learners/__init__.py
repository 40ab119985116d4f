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
