"""The study config's schema: pydantic models of every section. Teachers, model classes and
learners are discriminated unions of their registries' own `Params` models (keyed by `name`,
`class` and `name`), built when this module is imported, so a new entry, or a plugin's
(covpipe.registry), is part of the schema for free.

`json_schema()` is the JSON schema of a config file; `covpipe schema` writes it to
workflow/schemas/config.schema.json (the built-ins only), for editors and Snakemake's catalog.
Checks across sections (a model that must fit its teacher, sizes, names) are covpipe.config's.
"""

from __future__ import annotations

import json
import sys
from copy import copy
from functools import partial
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from .config_errors import Registered
from .learners import LEARNERS
from .models import MODELS
from .registry import Registry, key_field
from .teachers import TEACHERS

FIGURES = Literal["horizon", "training", "finetune", "interventions", "rate", "hard_instance", "lower_bound"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def entry_union(registry: Registry, **extra) -> Any:
    """The discriminated union of a registry's `Params` models, each with the `extra` fields
    ({name: (type, Field)}) added; the config key that names an entry picks the member. In the
    JSON schema each member requires that key and says what it names."""
    members = []
    for name, cls in registry.items():
        alone = [c.__module__ for c in registry.values()].count(cls.__module__) == 1
        text = cls.__dict__.get("__doc__") or (alone and sys.modules[cls.__module__].__doc__) or ""
        own_doc = text.strip().split("\n\n")[0]  # its first paragraph
        doc = " ".join(f"the {registry.kind}: {own_doc}".split()) if own_doc else f"the {registry.kind}"
        namespace = {
            "__module__": __name__,
            "__doc__": f"{registry.kind} '{name}'",
            "model_config": ConfigDict(json_schema_extra=partial(_names_itself, registry.key, doc)),
            "__annotations__": {key: kind for key, (kind, _) in extra.items()},
            **{key: field for key, (_, field) in extra.items()},
        }
        members.append(type(f"{cls.Params.__name__}Entry", (cls.Params,), namespace))
    return Annotated[
        Union[tuple(members)],  # noqa: UP007 (a tuple of types: the | form cannot unpack one)
        Field(discriminator=key_field(members[0], registry.key)),
        Registered(registry),
    ]


def _names_itself(key: str, doc: str, schema: dict) -> None:
    schema["properties"][key]["description"] = doc
    schema["required"] = sorted({*schema.get("required", ()), key})


def _without_defaults(model: type[BaseModel], name: str, doc: str) -> type[BaseModel]:
    """`model` with every field optional and no default: the keys of an override (what is not
    given is inherited, so nothing can be checked across keys until the merge)."""
    fields = {}
    for key, field in model.model_fields.items():
        override = copy(field)
        override.default, override.default_factory = None, None
        override.json_schema_extra = lambda schema: schema.pop("default", None)
        fields[key] = (field.annotation, override)
    return create_model(name, __base__=_Strict, __module__=__name__, __doc__=doc, **fields)


class Execution(_Strict):
    """How to run, never what to compute: changing these reruns nothing."""

    backend: Literal["auto", "serial", "ray"] = Field(
        "auto", description="auto: Ray only for jobs with more than one thread or a cluster address"
    )
    ray_address: str = Field(
        "local",
        description="'local' starts a private Ray per job; 'run' one local Ray "
        "for the whole Snakemake run, which every job attaches to; else host:port",
    )
    device_check: Literal["here", "in_jobs"] = Field(
        "here",
        description="where device: cuda is checked; in_jobs (profiles/slurm) lets a login node "
        "without GPU submit, and each cluster job checks its own node",
    )
    device: Literal["cpu", "cuda"] = Field("cpu", description="where models train and evaluate")
    memory_gb: float | None = Field(
        None, gt=0, description="memory one job may use (GiB); a study needing more is refused; default: all"
    )

    @field_validator("ray_address")
    @classmethod
    def _ray_reachable(cls, v, info):
        """A malformed or unreachable cluster address fails here, in seconds, not in the first job."""
        from .cluster import check_address

        if info.data.get("backend") != "serial":
            check_address(v)
        return v

    @field_validator("device")
    @classmethod
    def _device_exists(cls, v, info):
        in_job = (info.context or {}).get("in_cluster_job", False)
        if v == "cuda" and (info.data.get("device_check") == "here" or in_job):
            import torch

            if not torch.cuda.is_available():
                raise ValueError("'cuda' requested but torch sees no GPU on this machine; use 'cpu'")
        return v


class Data(_Strict):
    """The samples each seed draws from the teacher."""

    n_train: int = Field(256, ge=1, description="training sequences per seed")
    n_eval: int = Field(2000, ge=1, description="held-out sequences per class")
    shared_across_seeds: bool = Field(False, description="one training sample for every seed (seeds vary the init)")


LearnerEntry = entry_union(LEARNERS)


class Train(_Strict):
    """Training: the optimizer loop (mean per-token NLL), or a learner's single pass."""

    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="the torch optimizer of the loop")
    lr: float = Field(0.01, gt=0, description="learning rate (the peak one under the cosine schedule)")
    batch_size: int = Field(32, ge=1, description="sequences per optimizer step")
    steps: int = Field(
        400, ge=1, description="optimizer steps; with a learner, the sample budget in sequences (one pass)"
    )
    weight_decay: float = Field(0.0, ge=0, description="the optimizer's weight decay")
    checkpoints: list[int] = Field(
        default_factory=lambda: [400],
        description="steps (with a learner: sequences) at which the model is kept and evaluated; "
        "strictly increasing, the last at most steps",
    )
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="learning rate: constant, or linear warm-up then cosine decay to lr * min_lr_ratio"
    )
    warmup: int = Field(0, ge=0, description="warm-up steps of the cosine schedule")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="the cosine schedule's final lr, as a share of lr")
    learner: LearnerEntry | None = Field(
        None, description="a covpipe.learners entry, e.g. {name: seq_sgd}; none: the optimizer loop above"
    )

    @model_validator(mode="after")
    def _checkpoints_within_training(self):
        cps = self.checkpoints
        if not cps:
            raise ValueError("checkpoints: empty; list at least the final step")
        if any(c < 1 for c in cps):
            raise ValueError(f"checkpoints: steps must be >= 1, got {min(cps)}")
        if cps != sorted(set(cps)):
            raise ValueError(f"checkpoints: must be strictly increasing, got {cps}")
        if cps[-1] > self.steps:
            raise ValueError(f"checkpoints: step {cps[-1]} is beyond the training length steps={self.steps}")
        if self.warmup >= self.steps and self.schedule != "constant":
            raise ValueError(f"warmup: {self.warmup} warm-up steps leave none of steps={self.steps} to decay")
        if self.schedule != "constant" and self.learner is not None:
            raise ValueError("schedule: a learner sets its own step sizes; drop the schedule")
        return self


TrainOverride = _without_defaults(
    Train, "TrainOverride", "Keys that replace the study's training settings for one model."
)
ModelEntry = entry_union(
    MODELS,
    train=(TrainOverride | None, Field(None, description="this model's keys of the study's train section")),
    finetune=(TrainOverride | None, Field(None, description="this model's keys of the study's finetune.train")),
    learner=(LearnerEntry | None, Field(None, description="short for train.learner: this model's learner")),
)
TeacherEntry = entry_union(TEACHERS)


class Evaluate(_Strict):
    """Exact evaluation of every checkpoint on held-out samples y ~ pi_D."""

    levels: list[float] = Field(
        default_factory=lambda: [2, 4, 8, 16, 64, 256, 1024], description="N of the coverage profile Cov_N"
    )
    stopped_kl_levels: list[float] = Field(
        default_factory=lambda: [16], description="N (> 1) of the KL stopped at log N"
    )
    pass_at: list[float] = Field(
        default_factory=lambda: [1, 2, 4, 8, 12, 16, 32],
        description="N of Pass@N, for teachers with a notion of a correct response",
    )

    @field_validator("levels", "stopped_kl_levels", "pass_at")
    @classmethod
    def _levels_at_least_one(cls, v, info):
        if not v:
            raise ValueError("empty; list at least one level N")
        bad = [x for x in v if not x >= 1]
        if bad:
            raise ValueError(f"every level N must be >= 1, got {bad[0]:g}")
        if info.field_name == "stopped_kl_levels" and any(x <= 1 for x in v):
            raise ValueError("stopped KL needs N > 1")
        return sorted(set(v))


class Finetune(_Strict):
    """Online fine-tuning from each seed's final pre-train checkpoint (paper App. C.2)."""

    teacher: dict[str, Any] = Field(
        default_factory=dict, description="keys that replace the study teacher's, e.g. its class weights"
    )
    train: Train = Field(description="the fine-tuning run's training settings")
    seeds: int | None = Field(
        None,
        ge=1,
        description="fine-tuning runs; run s starts from pre-trained seed "
        "s mod the study's seeds (default: the study's seeds)",
    )


class SelectionSensitivity(_Strict):
    """Tournament settings run beside the headline one, for the sensitivity table."""

    level_ratios: list[float] = Field(default_factory=list, description="further level ratios (N/4, N: 0.25, 1)")
    tie_breaks: list[Literal["ce", "earliest"]] = Field(default_factory=list, description="further tie breaks")

    @field_validator("level_ratios")
    @classmethod
    def _positive(cls, v):
        bad = [r for r in v if not r > 0]
        if bad:
            raise ValueError(f"every level ratio must be > 0, got {bad[0]:g}")
        return v


class Selection(_Strict):
    """Checkpoint selection among a model's checkpoints (paper Sec. 6.3), see covpipe.selection."""

    n_select: int = Field(512, ge=1, description="held-out pi_D samples, disjoint from the evaluation set")
    pass_at: list[float] = Field(
        default_factory=lambda: [4, 8, 12], description="N whose Pass@N each pick is scored on"
    )
    level_ratio: float = Field(0.5, gt=0, description="the tournaments compare at level ratio * N (Cov_{N/2})")
    rules: list[Literal["min_ce", "tournament", "offset_tournament", "oracle"]] = Field(
        default_factory=lambda: ["min_ce", "tournament", "offset_tournament", "oracle"],
        description="the selection rules compared",
    )
    tie_break: Literal["ce", "earliest"] = Field(
        "ce",
        description="tournament ties go to the lower held-out CE (then the earlier checkpoint), or to the "
        "earlier checkpoint",
    )
    sensitivity: SelectionSensitivity = Field(
        default_factory=lambda: SelectionSensitivity(),
        description="further tournament settings reported beside the headline",
    )
    offset_a: list[float] = Field(
        default_factory=lambda: [0.0],
        description="a of the offset tournament's 2 N^a penalty, each in [0, 0.5); the first is the headline",
    )
    offset_prompts: int = Field(256, ge=1, description="held-out prompts the offset tournament samples at")

    @field_validator("offset_a", mode="before")
    @classmethod
    def _offset_list(cls, v):
        return [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("offset_a")
    @classmethod
    def _offset_range(cls, v):
        if not v:
            raise ValueError("empty; list at least one a")
        bad = [a for a in v if not 0 <= a < 0.5]
        if bad:
            raise ValueError(f"every a must be in [0, 0.5), got {bad[0]:g}")
        return v


class Study(_Strict):
    """One study: a teacher, the horizons and model classes fitted to it, and how."""

    teacher: TeacherEntry = Field(description="the teacher pi_D, a covpipe.teachers entry, e.g. {name: markov}")
    horizons: list[int] = Field(description="response lengths H, one cell each")
    seeds: int = Field(5, ge=1, description="independent runs of every cell")
    data: Data = Field(default_factory=Data, description="the samples drawn from the teacher")
    models: dict[str, ModelEntry] = Field(
        description="model name (a path part and table label) -> a covpipe.models entry, e.g. {class: gru}"
    )
    train: Train = Field(default_factory=Train, description="training settings of every model")
    evaluate: Evaluate = Field(default_factory=Evaluate, description="the evaluation's levels N")
    finetune: Finetune | None = Field(None, description="online fine-tuning after pre-training, if any")
    selection: Selection | None = Field(None, description="checkpoint selection, if any")
    figures: list[FIGURES] = Field(default_factory=lambda: ["horizon"], description="figure sets, see covpipe.plots")

    @model_validator(mode="after")
    def _selection_levels_are_evaluated(self):
        if self.selection is None:
            return self
        teacher = (self.finetune.teacher.get("name") if self.finetune else None) or self.teacher.name
        if teacher in TEACHERS and not hasattr(TEACHERS[teacher], "correct_responses"):
            raise ValueError(
                f"selection: teacher '{teacher}' has no notion of a correct response, so there is no "
                "Pass@N to select for; remove the selection section"
            )
        missing = [n for n in self.selection.pass_at if n not in self.evaluate.pass_at]
        if missing:
            raise ValueError(f"selection.pass_at: N = {missing[0]:g} is not in evaluate.pass_at")
        missing = [
            n * self.selection.level_ratio
            for n in self.selection.pass_at
            if n * self.selection.level_ratio not in self.evaluate.levels
        ]
        if missing:
            raise ValueError(
                f"selection.level_ratio: level {missing[0]:g} is not in evaluate.levels, "
                "which must hold every level the tournaments compare at"
            )
        return self

    @field_validator("horizons", "models")
    @classmethod
    def _not_empty(cls, v, info):
        if not v:
            what = {"horizons": "list at least one horizon", "models": "configure at least one model"}
            raise ValueError(f"empty; {what[info.field_name]}")
        return v

    @field_validator("horizons")
    @classmethod
    def _horizons(cls, v):
        for i, h in enumerate(v):
            if h < 1:
                raise ValueError(f"[{i}]: horizon must be >= 1, got {h}")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate horizons in {v}")
        return v


class Config(_Strict):
    """A covpipe config file: how to run, and the studies to run."""

    execution: Execution = Field(default_factory=Execution, description="how to run; changing it reruns nothing")
    studies: dict[str, Study] = Field(description="study name (a path part) -> its settings")


def json_schema() -> dict:
    """The JSON schema (draft 2020-12) of a config file, of the registries as loaded."""
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "covpipe config"
    return schema


def json_schema_text() -> str:
    """`json_schema()` as the committed file holds it."""
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"
