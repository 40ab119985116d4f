"""Model classes pi_hat, by name. A new class is one module plus one line here."""

from __future__ import annotations

from .ar_linear import ARLinearModel
from .base import Model, Vocab
from .gru import GRUModel
from .references import ConsistentBranch, ValidUniform
from .rule_mixture import RuleMixture
from .tables import Ngram, TablePerPosition
from .transformer import Transformer

MODELS: dict[str, type[Model]] = {
    "ar_linear": ARLinearModel,
    "consistent_branch": ConsistentBranch,
    "gru": GRUModel,
    "ngram": Ngram,
    "rule_mixture": RuleMixture,
    "table_per_position": TablePerPosition,
    "transformer": Transformer,
    "valid_uniform": ValidUniform,
}


def get_model(name: str) -> type[Model]:
    """The model class registered under `name`."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model class '{name}'; known: {', '.join(sorted(MODELS))}") from None


def build_model(spec: dict, vocab: Vocab, teacher=None) -> Model:
    """A fresh (untrained) model from its config slice, e.g. {"class": "gru", "hidden": 32}."""
    cls = get_model(spec["class"])
    params = cls.Params.model_validate(spec)
    return cls(vocab, params, teacher=teacher)
