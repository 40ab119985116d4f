"""What planning knows of each model class, without torch: its parameters, the checks config
validation runs, and the size of what building it allocates.

Each class here is the torch-free half of a model class: the torch module in its own module
inherits it (`class GRUModel(GRUSpec, Model)`), and `impl` names that module, which
`covpipe.models.build_model` imports on first use. So validating a config, and Snakemake
planning a run, import no torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_TABLE_ENTRIES = 50_000_000  # 400 MB of float64 counts


@dataclass(frozen=True)
class Vocab:
    """Token layout shared by a teacher and the models fitted to it."""

    vocab_size: int  # V
    input_vocab_size: int  # V_in; id V_in is BOS
    prompt_length: int  # P
    horizon: int  # response tokens at this horizon (H + 2 for the graph teacher's paths)

    @classmethod
    def of(cls, teacher, horizon: int) -> Vocab:
        return cls(
            teacher.vocab_size,
            teacher.input_vocab_size,
            teacher.prompt_length_for(horizon),
            teacher.response_length(horizon),
        )

    @property
    def bos(self) -> int:
        return self.input_vocab_size


class ModelSpec:
    """Base of every model class's planning half. A subclass sets `Params` and `impl` and
    overrides what differs from these defaults."""

    Params: type[BaseModel]
    impl: str  # "module:Class" of the torch module: relative to covpipe.models, or a dotted (plugin) path
    trainable = True  # False: fitted in closed form by `fit_counts`, no gradient steps
    has_feature_bound = False  # True: instances offer `feature_bound` (B), which the paper's step sizes read
    stacked = False  # True: seeds train as one stacked computation (covpipe.stacked.STACKED)

    @classmethod
    def impl_module(cls) -> str:
        """The dotted name of the module holding the torch model class."""
        module = cls.impl.partition(":")[0]
        return module if "." in module else f"covpipe.models.{module}"

    @classmethod
    def load(cls) -> type:
        """The torch model class (imports torch)."""
        return getattr(importlib.import_module(cls.impl_module()), cls.impl.partition(":")[2])

    @classmethod
    def build_bytes(cls, params, vocab: Vocab, teacher=None) -> int:
        """Memory that building this model allocates outside torch (numpy tables), from its params."""
        return 0

    @classmethod
    def check_fits(cls, params, vocab: Vocab, teacher=None) -> None:
        """Raise ValueError (naming the parameter) if this class cannot be fitted to `vocab`."""

    @classmethod
    def numel(cls, params, vocab: Vocab, teacher=None) -> int:
        """Elements of the built model's parameters and buffers (its state_dict), counted from its
        params: what the memory estimates of covpipe.limits multiply."""
        raise NotImplementedError


def _require(teacher, attribute: str, message: str) -> None:
    """Refuse (ValueError: `message` and the teacher's name) a teacher without `attribute`."""
    if not hasattr(teacher, attribute):
        raise ValueError(
            f"{message}; this study's teacher is '{getattr(getattr(teacher, 'params', None), 'name', teacher)}'"
        )


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out  # weight and bias


# ---- ar_linear ----------------------------------------------------------------------------------


class ARLinearModelParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    cls: Literal["ar_linear"] = Field("ar_linear", alias="class")
    dim: int = Field(16, ge=1, description="d, used only when the teacher has no feature map")
    window: int = Field(2, ge=1, le=8, description="w, used only when the teacher has no feature map")
    scale: float = Field(3.0, gt=0, description="B, used only when the teacher has no feature map")
    feature_seed: int = Field(0, ge=0, description="seed of the feature map, when the teacher has none")


class ARLinearSpec(ModelSpec):
    Params, impl, has_feature_bound, stacked = ARLinearModelParams, "ar_linear:ARLinearModel", True, True

    @classmethod
    def build_bytes(cls, params, vocab, teacher=None):
        from ..features import WindowFeatures

        if getattr(teacher, "features", None) is not None:
            return 0
        return WindowFeatures.table_bytes(vocab.input_vocab_size, params.window, params.dim)

    @classmethod
    def numel(cls, params, vocab, teacher=None):
        features = getattr(teacher, "features", None)
        return params.dim if features is None else int(features.dim)  # theta


# ---- gru ------------------------------------------------------------------------------------------


class GRUParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    cls: Literal["gru"] = Field("gru", alias="class")
    embed: int = Field(16, ge=1, description="token embedding width")
    hidden: int = Field(32, ge=1, description="GRU state width")
    layers: int = Field(1, ge=1, le=4, description="stacked GRU layers")


class GRUSpec(ModelSpec):
    Params, impl, stacked = GRUParams, "gru:GRUModel", True

    @classmethod
    def numel(cls, params, vocab, teacher=None):
        e, h = params.embed, params.hidden
        gates = sum(
            3 * h * ((e if layer == 0 else h) + h + 2) for layer in range(params.layers)
        )  # W_ih, W_hh, 2 biases
        return (vocab.input_vocab_size + 1) * e + gates + _linear(h, vocab.vocab_size)


# ---- transformer ------------------------------------------------------------------------------


class TransformerParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    cls: Literal["transformer"] = Field("transformer", alias="class")
    layers: int = Field(2, ge=1, le=48, description="transformer blocks")
    heads: int = Field(2, ge=1, description="attention heads per block")
    width: int = Field(64, ge=8, description="model dimension; a multiple of heads")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout probability in training")


class TransformerSpec(ModelSpec):
    Params, impl = TransformerParams, "transformer:Transformer"

    @classmethod
    def check_fits(cls, params, vocab, teacher=None):
        if params.width % params.heads:
            raise ValueError(f"width: {params.width} is not a multiple of heads={params.heads}")

    @classmethod
    def numel(cls, params, vocab, teacher=None):
        w = params.width
        context = vocab.prompt_length + vocab.horizon  # BOS ++ x ++ y_<L
        block = 4 * w + _linear(w, 3 * w) + _linear(w, w) + _linear(w, 4 * w) + _linear(4 * w, w)  # 2 layer norms
        return (vocab.input_vocab_size + 1 + context) * w + params.layers * block + 2 * w + _linear(w, vocab.vocab_size)


# ---- rule_mixture -------------------------------------------------------------------------------

RuleKind = Literal["match", "mismatch", "uniform4"]


class RuleMixtureParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    cls: Literal["rule_mixture"] = Field("rule_mixture", alias="class")
    rules: list[RuleKind] = Field(
        default_factory=lambda: ["match", "mismatch", "uniform4"],
        min_length=1,
        description="the class rules mixed; the weights start uniform",
    )


class RuleMixtureSpec(ModelSpec):
    Params, impl = RuleMixtureParams, "rule_mixture:RuleMixture"

    @classmethod
    def check_fits(cls, params, vocab, teacher=None):
        _require(teacher, "rule_step_log_probs", "class: 'rule_mixture' mixes the graph teacher's class rules")
        if len(set(params.rules)) != len(params.rules):
            raise ValueError(f"rules: duplicate rules in {params.rules}")

    @classmethod
    def numel(cls, params, vocab, teacher=None):
        return len(params.rules)  # one logit per rule


# ---- count tables -------------------------------------------------------------------------------


class TableParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    order: int = Field(1, ge=0, le=4, description="k, tokens of context")
    smoothing: float = Field(0.5, gt=0, description="lambda of add-lambda smoothing")


class TablePerPositionParams(TableParams):
    cls: Literal["table_per_position"] = Field("table_per_position", alias="class")


class NgramParams(TableParams):
    cls: Literal["ngram"] = Field("ngram", alias="class")


class _CountTableSpec(ModelSpec):
    trainable = False
    per_position: bool

    @classmethod
    def check_fits(cls, params, vocab, teacher=None):
        entries = cls.numel(params, vocab, teacher)
        if entries > MAX_TABLE_ENTRIES:
            raise ValueError(
                f"order: {params.order} needs {entries:.3g} table entries at horizon {vocab.horizon} "
                f"(limit {MAX_TABLE_ENTRIES:.0e}); lower the order"
            )

    @classmethod
    def numel(cls, params, vocab, teacher=None):
        return (
            (vocab.horizon if cls.per_position else 1) * (vocab.input_vocab_size + 1) ** params.order * vocab.vocab_size
        )


class TablePerPositionSpec(_CountTableSpec):
    Params, impl, per_position = TablePerPositionParams, "tables:TablePerPosition", True


class NgramSpec(_CountTableSpec):
    Params, impl, per_position = NgramParams, "tables:Ngram", False


# ---- graph references ---------------------------------------------------------------------------


class _GraphReferenceSpec(ModelSpec):
    trainable = False

    @classmethod
    def check_fits(cls, params, vocab, teacher=None):
        _require(teacher, "parse", f"class: '{params.cls}' is a reference of the graph teacher")

    @classmethod
    def numel(cls, params, vocab, teacher=None):
        return 1  # the `fitted` placeholder buffer


class _ReferenceParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ValidUniformParams(_ReferenceParams):
    cls: Literal["valid_uniform"] = Field("valid_uniform", alias="class")


class ConsistentBranchParams(_ReferenceParams):
    cls: Literal["consistent_branch"] = Field("consistent_branch", alias="class")


class ValidUniformSpec(_GraphReferenceSpec):
    Params, impl = ValidUniformParams, "references:ValidUniform"


class ConsistentBranchSpec(_GraphReferenceSpec):
    Params, impl = ConsistentBranchParams, "references:ConsistentBranch"
