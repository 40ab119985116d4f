"""An example covpipe plugin: a teacher `iid` (i.i.d. tokens) and a model class `unigram` (one
shared table of token frequencies), each a built-in under a name and parameters of its own.

The model's planning half (parameters, sizes) is here and imports no torch; `impl` names the
torch module, which covpipe imports only when it builds the model."""

from typing import Literal

from pydantic import Field

from covpipe.models.params import NgramSpec, TableParams
from covpipe.teachers.markov import Markov, MarkovParams


class IIDParams(MarkovParams):
    name: Literal["iid"] = Field("iid", description="i.i.d. tokens from one Dirichlet draw")
    order: Literal[0] = Field(0, description="no context: always 0")


class IID(Markov):
    """Tokens drawn i.i.d. from a Dirichlet(alpha) draw over V tokens (the order-0 Markov chain)."""

    Params = IIDParams


class UnigramParams(TableParams):
    cls: Literal["unigram"] = Field("unigram", alias="class", description="one table of token frequencies")
    order: Literal[0] = Field(0, description="no context: always 0")


class UnigramSpec(NgramSpec):
    Params, impl = UnigramParams, "covpipe_plugin_example.unigram:Unigram"
