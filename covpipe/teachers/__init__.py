"""Teachers pi_D with exact likelihoods, by name. A new teacher is one module plus one line here."""

from __future__ import annotations

from .ar_linear import ARLinear
from .base import Teacher
from .graph import Graph
from .hard_instances import KLLowerBound, SGDTwoScales
from .markov import Markov
from .pivotal import Pivotal
from .sgd_lower_bound import SGDLowerBound

TEACHERS: dict[str, type[Teacher]] = {
    "ar_linear": ARLinear,
    "graph": Graph,
    "kl_lower_bound": KLLowerBound,
    "markov": Markov,
    "pivotal": Pivotal,
    "sgd_two_scales": SGDTwoScales,
}
TEACHERS["sgd_lower_bound"] = SGDLowerBound  # paper App. I.4, Lemmas I.6-I.7


def get_teacher(name: str) -> type[Teacher]:
    """The teacher class registered under `name`."""
    try:
        return TEACHERS[name]
    except KeyError:
        raise KeyError(f"unknown teacher '{name}'; known: {', '.join(sorted(TEACHERS))}") from None


def build_teacher(spec: dict) -> Teacher:
    """A teacher from its config slice, e.g. {"name": "markov", "vocab_size": 8}."""
    cls = get_teacher(spec["name"])
    return cls(cls.Params(**spec))
