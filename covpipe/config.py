"""The study config: its schema, its validation, and the plain-dict slices each stage receives.

`load_config(path)` validates a whole YAML file before any job runs and raises `ConfigError`
with one line naming the file, the key and the problem. Teacher and model parameters are the
registries' own pydantic models, so a new teacher or model class appears here for free.
"""

from __future__ import annotations

import difflib
import math
import re
import reprlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import limits, strict_yaml
from .learners import LEARNERS, check_learner
from .models import MODELS, Vocab
from .teachers import TEACHERS, build_teacher

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # always fullmatch: `$` would let "name\n" through
MAX_NAME = 64
# Labels covpipe itself writes into the `class` column of its tables (the mixture of all classes).
RESERVED_CLASSES = frozenset({"all"})


class ConfigError(ValueError):
    """A user error in the config; its message is one line meant for the user."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Execution(_Strict):
    """How to run, never what to compute: changing these reruns nothing."""

    backend: Literal["auto", "serial", "ray"] = "auto"
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
    device: Literal["cpu", "cuda"] = "cpu"
    memory_gb: float | None = Field(
        None,
        gt=0,
        description="the memory one job may use (GiB); studies whose "
        "largest job is estimated to need more are refused. Default: this machine's",
    )

    @field_validator("ray_address")
    @classmethod
    def _ray_reachable(cls, v, info):
        """A malformed or unreachable cluster address fails here, in seconds, not in the first job."""
        from .distribute import check_address

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
    n_train: int = Field(256, ge=1, description="training sequences per seed")
    n_eval: int = Field(2000, ge=1, description="held-out sequences per class")
    shared_across_seeds: bool = Field(False, description="one training sample for every seed (seeds vary the init)")


class Train(_Strict):
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(32, ge=1)
    steps: int = Field(400, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    checkpoints: list[int] = Field(default_factory=lambda: [400])
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="learning rate: constant, or linear warm-up then cosine decay to lr * min_lr_ratio"
    )
    warmup: int = Field(0, ge=0, description="warm-up steps of the cosine schedule")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="the cosine schedule's final lr, as a share of lr")
    learner: dict[str, Any] | None = Field(
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


class Evaluate(_Strict):
    levels: list[float] = Field(default_factory=lambda: [2, 4, 8, 16, 64, 256, 1024])
    stopped_kl_levels: list[float] = Field(default_factory=lambda: [16])
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
    train: Train
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
        default_factory=lambda: ["min_ce", "tournament", "offset_tournament", "oracle"]
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
    teacher: dict[str, Any]
    horizons: list[int]
    seeds: int = Field(5, ge=1)
    data: Data = Field(default_factory=Data)
    models: dict[str, dict[str, Any]]
    train: Train = Field(default_factory=Train)
    evaluate: Evaluate = Field(default_factory=Evaluate)
    finetune: Finetune | None = None
    selection: Selection | None = None
    figures: list[
        Literal["horizon", "training", "finetune", "interventions", "rate", "hard_instance", "lower_bound"]
    ] = Field(default_factory=lambda: ["horizon"], description="figure sets, see covpipe.plots")

    @model_validator(mode="after")
    def _selection_levels_are_evaluated(self):
        if self.selection is None:
            return self
        teacher = (self.finetune.teacher.get("name") if self.finetune else None) or self.teacher.get("name")
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

    @field_validator("horizons")
    @classmethod
    def _horizons(cls, v):
        if not v:
            raise ValueError("empty; list at least one horizon")
        for i, h in enumerate(v):
            if h < 1:
                raise ValueError(f"[{i}]: horizon must be >= 1, got {h}")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate horizons in {v}")
        return v

    @field_validator("models")
    @classmethod
    def _models(cls, v):
        if not v:
            raise ValueError("empty; configure at least one model")
        return v


class Config(_Strict):
    execution: Execution = Field(default_factory=Execution)
    studies: dict[str, Study]


# ---- loading ------------------------------------------------------------------------------


def load_config(path, overrides: dict | None = None, in_cluster_job: bool = False) -> dict:
    """Read and validate a YAML config file (or a list of them, later ones merged over earlier
    ones); return it as plain builtins with defaults filled.

    overrides: the `--config KEY=VALUE` settings of a workflow run, merged last; a message that
    only they cause names `--config`, not the file.
    """
    paths = [Path(p) for p in (path if isinstance(path, (list, tuple)) else [path])]
    source = ", ".join(str(p) for p in paths) or "config"
    raw: dict = {}
    for p in paths:
        one = read_config(p)
        if len(paths) > 1 and not isinstance(one, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level, got {type(one).__name__}")
        raw = _merge(raw, one) if len(paths) > 1 else one
    if overrides:
        merged = _merge(raw, dict(overrides))
        try:  # the overrides may complete the files (profiles/slurm sets execution.device_check)
            return validate_config(merged, source=source, in_cluster_job=in_cluster_job)
        except ConfigError:
            validate_config(raw, source=source, in_cluster_job=in_cluster_job)  # the files alone wrong: blame them
            return validate_config(merged, source="--config", in_cluster_job=in_cluster_job)  # else the override
    return validate_config(raw, source=source, in_cluster_job=in_cluster_job)


def read_config(path):
    """The raw contents of one config file, read by strict_yaml (bounded, duplicate keys refused)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file")
    try:
        return strict_yaml.load(path)
    except strict_yaml.YAMLRefused as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_short(_one_line(exc), 200)}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None


def _merge(base, over):
    """`over` merged into `base` recursively (Snakemake's --config semantics for nested mappings)."""
    if not isinstance(base, dict) or not isinstance(over, dict):
        return over
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(base.get(key), value) if key in base else value
    return out


def validate_config(raw, source: str = "config", in_cluster_job: bool = False) -> dict:
    """Validate a config mapping (as loaded from YAML); raise ConfigError naming the key.

    in_cluster_job: validating inside a job on a cluster node (execution.device_check: in_jobs).
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    _check_plain(source, raw)
    for key in raw:
        if key not in Config.model_fields:
            raise ConfigError(f"{source}: {_short(key)}: unknown top-level key{_suggest(key, Config.model_fields)}")
    try:
        # strict: no bool as a number, no "8" as 8, no 2.0 as an integer
        cfg = Config.model_validate(raw, strict=True, context={"in_cluster_job": in_cluster_job})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_first_error(exc)}") from None
    out = cfg.model_dump()
    limit, limit_key = limits.limit_bytes(out["execution"])
    for name, study in cfg.studies.items():
        _check_name(source, "studies", name)
        where = f"studies.{name}"
        out["studies"][name]["teacher"] = _validate_entry(
            source, f"{where}.teacher", study.teacher, "name", TEACHERS, "teacher"
        )
        for cls_name in out["studies"][name]["teacher"].get("classes") or ():
            _check_name(source, f"{where}.teacher.classes", cls_name, "class names", RESERVED_CLASSES)
        _check_teacher_size(source, f"{where}.teacher", out["studies"][name]["teacher"], limit, limit_key)
        teacher = build_teacher(out["studies"][name]["teacher"])
        for horizon in study.horizons:
            try:
                teacher.check_horizon(horizon)
            except ValueError as exc:
                raise ConfigError(f"{source}: {where}.teacher.{exc}") from None
        if study.finetune is not None:
            merged = {**out["studies"][name]["teacher"], **study.finetune.teacher}
            if merged["name"] != out["studies"][name]["teacher"]["name"]:
                raise ConfigError(f"{source}: {where}.finetune.teacher.name: fine-tuning keeps the study's teacher")
            ft = _validate_entry(source, f"{where}.finetune.teacher", merged, "name", TEACHERS, "teacher")
            for cls_name in ft.get("classes") or ():
                _check_name(source, f"{where}.finetune.teacher.classes", cls_name, "class names", RESERVED_CLASSES)
            _check_teacher_size(source, f"{where}.finetune.teacher", ft, limit, limit_key)
            out["studies"][name]["finetune"]["teacher"] = ft
            for horizon in study.horizons:
                try:
                    build_teacher(ft).check_horizon(horizon)
                    if Vocab.of(build_teacher(ft), horizon) != Vocab.of(teacher, horizon):
                        raise ValueError("changes the token layout of the pre-training teacher")
                except ValueError as exc:
                    raise ConfigError(f"{source}: {where}.finetune.teacher: {exc}") from None
        for model_name, entry in study.models.items():
            _check_name(source, f"{where}.models", model_name)
            entry = dict(entry)
            override = entry.pop("train", None) or {}
            learner_key = f"{where}.models.{model_name}.train.learner"
            if "learner" in entry:  # models.m.learner is short for models.m.train.learner
                override, learner_key = (
                    {**override, "learner": entry.pop("learner")},
                    f"{where}.models.{model_name}.learner",
                )
            ft_override = entry.pop("finetune", None)
            model = _validate_entry(source, f"{where}.models.{model_name}", entry, "class", MODELS, "model class")
            model_cls = MODELS[model["class"]]
            for horizon in study.horizons:
                try:
                    model_cls.check_fits(model_cls.Params.model_validate(model), Vocab.of(teacher, horizon), teacher)
                except ValueError as exc:
                    raise ConfigError(f"{source}: {where}.models.{model_name}.{exc}") from None
            if override:
                if not isinstance(override, dict):
                    raise ConfigError(
                        f"{source}: {where}.models.{model_name}.train: expected a mapping, "
                        f"got {type(override).__name__}"
                    )
                try:
                    merged = Train.model_validate({**study.train.model_dump(), **override}, strict=True)
                except ValidationError as exc:
                    raise ConfigError(f"{source}: {where}.models.{model_name}.train.{_first_error(exc)}") from None
                model["train"] = merged.model_dump()
            if ft_override is not None:  # models.m.finetune: this model's keys of finetune.train
                model["finetune"] = _finetune_override(
                    source, f"{where}.models.{model_name}.finetune", study, ft_override
                )
            effective = model.get("train") or out["studies"][name]["train"]
            if effective.get("learner") is not None:
                key = learner_key if "learner" in override else f"{where}.train.learner"
                effective["learner"] = _validate_learner(source, key, effective, model_cls, teacher, study.data.n_train)
            out["studies"][name]["models"][model_name] = model
            if limit is not None:
                _check_memory(
                    source, where, out["studies"][name], model_name, model_cls, teacher, override, limit, limit_key
                )
    _drop_unset_learners(out)
    return out


def _finetune_override(source, where, study, override) -> dict:
    """A model's own fine-tuning settings: the study's finetune.train with `override`'s keys replaced."""
    if study.finetune is None:
        raise ConfigError(f"{source}: {where}: this study has no finetune section")
    if not isinstance(override, dict):
        raise ConfigError(f"{source}: {where}: expected a mapping, got {type(override).__name__}")
    try:
        return Train.model_validate({**study.finetune.train.model_dump(), **override}, strict=True).model_dump()
    except ValidationError as exc:
        raise ConfigError(f"{source}: {where}.{_first_error(exc)}") from None


def _check_teacher_size(source, where, spec, limit, limit_key) -> None:
    """Refuse a teacher whose construction alone would not fit, before constructing it."""
    cls = TEACHERS[spec["name"]]
    need = cls.build_bytes(cls.Params.model_validate(spec))
    if limit is not None and need > limit:
        raise ConfigError(
            f"{source}: {where}: building this teacher needs about {limits.gib(need)}; the limit is "
            f"{limits.gib(limit)} ({limit_key})"
        )


def _check_memory(source, where, study, model_name, model_cls, teacher, override, limit, limit_key) -> None:
    """Refuse the study if a stage job of one of this model's cells would not fit in `limit` bytes."""
    model = study["models"][model_name]
    params = model_cls.Params.model_validate({k: v for k, v in model.items() if k not in ("train", "finetune")})
    fits = [("train", model.get("train") or study["train"], study["seeds"])]
    if study.get("finetune"):
        fits.append(
            (
                "finetune.train",
                model.get("finetune") or study["finetune"]["train"],
                study["finetune"]["seeds"] or study["seeds"],
            )
        )
    for horizon in study["horizons"]:
        vocab = Vocab.of(teacher, horizon)
        need = model_cls.build_bytes(params, vocab, teacher)
        if need > limit:
            raise ConfigError(
                f"{source}: {where}.models.{model_name}: building this model at horizon {horizon} needs "
                f"about {limits.gib(need)}; the limit is {limits.gib(limit)} ({limit_key})"
            )
        numel = model_cls.numel(params, vocab, teacher)
        for section, fit, seeds in fits:
            try:
                limits.check_cell(study, teacher, params, numel, horizon, vocab, fit, seeds, limit)
            except ValueError as exc:
                key, _, rest = str(exc).partition(": ")
                if key == "models":
                    key = f"models.{model_name}"
                elif key.startswith("train."):
                    key = (
                        f"models.{model_name}.{key}"
                        if key.split(".")[1] in override and section == "train"
                        else f"{section}.{key.split('.', 1)[1]}"
                    )
                raise ConfigError(
                    f"{source}: {where}.{key}: {rest}; the limit is {limits.gib(limit)} ({limit_key})"
                ) from None


def _validate_entry(source, where, entry, key, registry, kind) -> dict:
    if not isinstance(entry, dict):
        raise ConfigError(f"{source}: {where}: expected a mapping, got {type(entry).__name__}")
    if key not in entry:
        raise ConfigError(f"{source}: {where}.{key}: missing; known: {', '.join(sorted(registry))}")
    name = entry[key]
    if not isinstance(name, str) or name not in registry:
        raise ConfigError(
            f"{source}: {where}.{key}: unknown {kind} '{_short(name)}'; known: {', '.join(sorted(registry))}"
        )
    params_cls = registry[name].Params
    try:
        params = params_cls.model_validate(entry, strict=True)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {where}.{_first_error(exc)}") from None
    return params.model_dump(by_alias=True)


def _drop_unset_learners(out: dict) -> None:
    """A train section without a learner carries no `learner` key at all, so the specs (and
    Snakemake's params) of studies that use none stay exactly as they were before learners."""
    for study in out["studies"].values():
        trains = [
            study["train"],
            *(m.get(k) for m in study["models"].values() for k in ("train", "finetune")),
            (study.get("finetune") or {}).get("train"),
        ]
        for train in trains:
            if train is not None and train.get("learner", 0) is None:
                del train["learner"]
            if train is not None and train.get("schedule") == "constant":  # the default: specs stay as before
                for key in ("schedule", "warmup", "min_lr_ratio"):
                    train.pop(key, None)


def _validate_learner(source, where, train, model_cls, teacher, n_train) -> dict:
    learner = _validate_entry(source, where, train["learner"], "name", LEARNERS, "learner")
    try:
        check_learner(learner, model_cls, teacher, train, n_train)
    except ValueError as exc:
        raise ConfigError(f"{source}: {where}.{exc}") from None
    return learner


def _check_name(source, prefix, name, kind="names", reserved=frozenset()):
    if not isinstance(name, str) or not NAME.fullmatch(name) or len(name) > MAX_NAME:
        shown = _short(name) if isinstance(name, str) and name.isprintable() else _short(repr(name))
        raise ConfigError(
            f"{source}: {prefix}.{shown}: {kind} must match {NAME.pattern} and have at most "
            f"{MAX_NAME} characters (they become path parts and table labels)"
        )
    if name in reserved:
        raise ConfigError(f"{source}: {prefix}.{name}: '{name}' is a label covpipe writes itself; choose another name")


def _check_plain(source, raw) -> None:
    """Refuse what no setting takes, anywhere in the tree: NaN or infinite numbers (in every
    teacher, model and learner section, not only the top-level schema) and non-string keys.
    The tree is small: strict_yaml bounds its expanded size before we get here."""
    stack = [("", raw, 0)]
    while stack:
        where, value, depth = stack.pop()
        if depth > strict_yaml.MAX_DEPTH:
            raise ConfigError(f"{source}: {where}: nested deeper than {strict_yaml.MAX_DEPTH} levels")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{source}: {where}: Input should be a finite number, got {value}")
        if isinstance(value, dict):
            for key, child in value.items():
                if not isinstance(key, str):
                    raise ConfigError(
                        f"{source}: {where + '.' if where else ''}{_short(key)}: keys must be "
                        f"strings, got {type(key).__name__}"
                    )
                stack.append((f"{where}.{key}" if where else key, child, depth + 1))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", child, depth + 1) for i, child in enumerate(value))


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ""
    for part in err["loc"]:
        loc += f"[{part}]" if isinstance(part, int) else (f".{_short(part)}" if loc else _short(part))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "missing"
    elif "input" in err and err["type"] not in ("value_error",):
        msg = f"{msg}, got {_short(err['input'])!s}"
    if msg.startswith("[") and "]:" in msg:  # a list index reported by a validator
        idx, _, rest = msg.partition(":")
        return f"{loc}{idx}:{rest}"
    return f"{loc}: {msg}"


def _suggest(key, choices) -> str:
    close = difflib.get_close_matches(str(key), list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(choices)}"


_REPR = reprlib.Repr()  # Python 3.11: attributes, not constructor arguments
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, 4, 6, 60, 60, 40


def _short(value, limit: int = 60) -> str:
    """A bounded rendering of any value: never a repr of a whole (possibly huge) input."""
    text = value[: limit + 1] if isinstance(value, str) else _REPR.repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(exc) -> str:
    return " ".join(str(exc).split())
