"""The study config: loading, validation, and the plain-dict slices each stage receives.

`load_config(path)` validates a whole YAML file before any job runs and raises `ConfigError`
with one line naming the file, the key and the problem. The schema is covpipe.config_models
(teachers, model classes and learners are their registries' own pydantic models); this module
adds the checks across sections: names, that each model fits its teacher, learners, memory.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from . import limits, strict_yaml
from .config_errors import NAME, ConfigError, check_name, check_plain, first_error, one_line, short, suggest
from .config_models import Config, Execution, Train
from .learners import LEARNERS
from .models import MODELS, Vocab
from .teachers import TEACHERS, build_teacher

__all__ = ["NAME", "ConfigError", "Execution", "load_config", "read_config", "validate_config"]

# Labels covpipe itself writes into the `class` column of its tables (the mixture of all classes).
RESERVED_CLASSES = frozenset({"all"})


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
        raise ConfigError(f"{path}: not valid YAML: {short(one_line(exc), 200)}") from None
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
    check_plain(source, raw)
    for key in raw:
        if key not in Config.model_fields:
            raise ConfigError(f"{source}: {short(key)}: unknown top-level key{suggest(key, Config.model_fields)}")
    try:
        # strict: no bool as a number, no "8" as 8, no 2.0 as an integer
        cfg = Config.model_validate(raw, strict=True, context={"in_cluster_job": in_cluster_job})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {first_error(exc, Config)}") from None
    out = cfg.model_dump(by_alias=True)
    limit, limit_key = limits.limit_bytes(out["execution"])
    for name, study in cfg.studies.items():
        check_name(source, "studies", name)
        where, spec = f"studies.{name}", out["studies"][name]
        for cls_name in spec["teacher"].get("classes") or ():
            check_name(source, f"{where}.teacher.classes", cls_name, "class names", RESERVED_CLASSES)
        _check_teacher_size(source, f"{where}.teacher", spec["teacher"], limit, limit_key)
        teacher = build_teacher(spec["teacher"])
        for horizon in study.horizons:
            try:
                teacher.check_horizon(horizon)
            except ValueError as exc:
                raise ConfigError(f"{source}: {where}.teacher.{exc}") from None
        if study.finetune is not None:
            spec["finetune"]["teacher"] = _finetune_teacher(source, where, study, spec, teacher, limit, limit_key)
        for model_name, entry in study.models.items():
            check_name(source, f"{where}.models", model_name)
            spec["models"][model_name], override = _model(source, where, model_name, entry, study, spec, teacher)
            if limit is not None:
                model_cls = MODELS[entry.cls]
                _check_memory(source, where, spec, model_name, model_cls, teacher, override, limit, limit_key)
    _drop_unset_learners(out)
    return out


def _model(source, where, model_name, entry, study, spec, teacher) -> tuple[dict, dict]:
    """A validated model entry as its spec (the class's parameters, and the model's own train and
    finetune sections where it overrides the study's), and the train keys it overrides."""
    key = f"{where}.models.{model_name}"
    given = entry.model_dump(by_alias=True, exclude_unset=True, include={"train", "finetune", "learner"})
    override, learner_key = given.get("train") or {}, f"{key}.train.learner"
    if "learner" in given:  # models.m.learner is short for models.m.train.learner
        override, learner_key = {**override, "learner": given["learner"]}, f"{key}.learner"
    model = entry.model_dump(by_alias=True, exclude={"train", "finetune", "learner"})
    model_cls = MODELS[model["class"]]
    for horizon in study.horizons:
        try:
            model_cls.check_fits(model_cls.Params.model_validate(model), Vocab.of(teacher, horizon), teacher)
        except ValueError as exc:
            raise ConfigError(f"{source}: {key}.{exc}") from None
    if override:
        try:
            merged = Train.model_validate({**study.train.model_dump(), **override}, strict=True)
        except ValidationError as exc:
            raise ConfigError(f"{source}: {key}.train.{first_error(exc, Train)}") from None
        model["train"] = merged.model_dump()
    if given.get("finetune") is not None:  # models.m.finetune: this model's keys of finetune.train
        model["finetune"] = _finetune_override(source, f"{key}.finetune", study, given["finetune"])
    effective = model.get("train") or spec["train"]
    if effective.get("learner") is not None:
        where_learner = learner_key if "learner" in override else f"{where}.train.learner"
        try:
            check_learner(effective["learner"], model_cls, teacher, effective, study.data.n_train)
        except ValueError as exc:
            raise ConfigError(f"{source}: {where_learner}.{exc}") from None
    return model, override


def _finetune_teacher(source, where, study, spec, teacher, limit, limit_key) -> dict:
    """The fine-tuning teacher: the study's with finetune.teacher's keys replaced; it must keep the
    pre-training teacher's kind and token layout."""
    merged = {**spec["teacher"], **study.finetune.teacher}
    if merged["name"] != spec["teacher"]["name"]:
        raise ConfigError(f"{source}: {where}.finetune.teacher.name: fine-tuning keeps the study's teacher")
    params = TEACHERS[merged["name"]].Params
    try:
        ft = params.model_validate(merged, strict=True).model_dump(by_alias=True)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {where}.finetune.teacher.{first_error(exc, params)}") from None
    for cls_name in ft.get("classes") or ():
        check_name(source, f"{where}.finetune.teacher.classes", cls_name, "class names", RESERVED_CLASSES)
    _check_teacher_size(source, f"{where}.finetune.teacher", ft, limit, limit_key)
    for horizon in study.horizons:
        try:
            build_teacher(ft).check_horizon(horizon)
            if Vocab.of(build_teacher(ft), horizon) != Vocab.of(teacher, horizon):
                raise ValueError("changes the token layout of the pre-training teacher")
        except ValueError as exc:
            raise ConfigError(f"{source}: {where}.finetune.teacher: {exc}") from None
    return ft


def _finetune_override(source, where, study, override) -> dict:
    """A model's own fine-tuning settings: the study's finetune.train with `override`'s keys replaced."""
    if study.finetune is None:
        raise ConfigError(f"{source}: {where}: this study has no finetune section")
    if not isinstance(override, dict):
        raise ConfigError(f"{source}: {where}: expected a mapping, got {type(override).__name__}")
    try:
        return Train.model_validate({**study.finetune.train.model_dump(), **override}, strict=True).model_dump()
    except ValidationError as exc:
        raise ConfigError(f"{source}: {where}.{first_error(exc, Train)}") from None


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
