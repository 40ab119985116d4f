"""Teachers pi_D with exact likelihoods, by name. A new teacher is one module plus one line here,
or an entry point of group `covpipe.teachers` in another package (covpipe.registry)."""

from __future__ import annotations

from ..registry import Registry
from .ar_linear import ARLinear
from .base import Teacher
from .graph import Graph
from .hard_instances import KLLowerBound, SGDTwoScales
from .markov import Markov
from .pivotal import Pivotal
from .sgd_lower_bound import SGDLowerBound

TEACHERS: Registry = Registry(
    "teacher",
    "covpipe.teachers",
    "name",
    {
        "ar_linear": ARLinear,
        "graph": Graph,
        "kl_lower_bound": KLLowerBound,
        "markov": Markov,
        "pivotal": Pivotal,
        "sgd_two_scales": SGDTwoScales,
        "sgd_lower_bound": SGDLowerBound,  # paper App. I.4, Lemmas I.6-I.7
    },
)


def get_teacher(name: str) -> type[Teacher]:
    """The teacher class registered under `name`."""
    return TEACHERS.lookup(name)


def build_teacher(spec: dict) -> Teacher:
    """A teacher from its config slice, e.g. {"name": "markov", "vocab_size": 8}."""
    cls = get_teacher(spec["name"])
    return cls(cls.Params(**spec))
