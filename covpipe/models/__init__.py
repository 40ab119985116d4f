"""Model classes pi_hat, by name. A new class is its parameters and checks in `params.py`, its
torch module in a module of its own, and one line here; or an entry point of group
`covpipe.models` in another package (covpipe.registry).

The registry holds each class's planning half (`params.ModelSpec`: parameters, checks, sizes),
which imports no torch; `model_class` and `build_model` import the torch module on first use.
"""

from __future__ import annotations

from ..registry import Registry
from .params import (
    ARLinearSpec,
    ConsistentBranchSpec,
    GRUSpec,
    ModelSpec,
    NgramSpec,
    RuleMixtureSpec,
    TablePerPositionSpec,
    TransformerSpec,
    ValidUniformSpec,
    Vocab,
)

MODELS: Registry = Registry(
    "model class",
    "covpipe.models",
    "class",
    {
        "ar_linear": ARLinearSpec,
        "consistent_branch": ConsistentBranchSpec,
        "gru": GRUSpec,
        "ngram": NgramSpec,
        "rule_mixture": RuleMixtureSpec,
        "table_per_position": TablePerPositionSpec,
        "transformer": TransformerSpec,
        "valid_uniform": ValidUniformSpec,
    },
)

__all__ = ["MODELS", "ModelSpec", "Vocab", "build_model", "get_model", "model_class"]


def get_model(name: str) -> type[ModelSpec]:
    """The planning half of the model class registered under `name` (no torch)."""
    return MODELS.lookup(name)


def model_class(name: str) -> type:
    """The torch model class registered under `name` (imports torch)."""
    return get_model(name).load()


def build_model(spec: dict, vocab: Vocab, teacher=None):
    """A fresh (untrained) model from its config slice, e.g. {"class": "gru", "hidden": 32}."""
    cls = model_class(spec["class"])
    params = cls.Params.model_validate(spec)
    return cls(vocab, params, teacher=teacher)


def __getattr__(name: str):
    if name == "Model":  # the torch base class, imported on first use
        from .base import Model

        return Model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
