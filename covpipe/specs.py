"""Every stage job's spec: the science settings it runs with, as plain builtins, built from the
validated config. The Snakemake rules (as `params`) and the `covpipe` CLI both build specs here,
so a job run either way sees the same settings; a changed spec reruns the job.

Imports no torch, stage code or plotting: Snakemake imports this while it plans. Each spec holds
the fingerprint of the code its job runs (`covpipe.fingerprint`): "code" for the stage itself and
"<stage>_code" for a stage whose spec extends another's, so a code change reruns its jobs.
"""

from __future__ import annotations

from .fingerprint import of_job


def _uses(teachers=(), model=None, learner=None) -> frozenset[tuple[str, str]]:
    """The registry entries a job reads, for its fingerprint."""
    out = {("teacher", t["name"]) for t in teachers if t}
    if model is not None:
        out.add(("model", model))
    if learner is not None:
        out.add(("learner", learner))
    return frozenset(out)


def data_spec(study_name: str, study: dict, horizon: int) -> dict:
    """The data job of one (study, horizon): its training samples and evaluation set."""
    data = dict(study["data"])
    if not data.get("shared_across_seeds"):
        data.pop("shared_across_seeds", None)  # the default adds nothing: keep specs (and caches) of older studies
    spec = {"study": study_name, "teacher": study["teacher"], "horizon": int(horizon), "seeds": study["seeds"], **data}
    if study.get("finetune"):  # only then: older studies keep their specs (and caches)
        spec["eval_teacher"] = study["finetune"]["teacher"]
    spec["code"] = of_job("data", _uses([spec["teacher"], spec.get("eval_teacher")]))
    return spec


def select_data_spec(study_name: str, study: dict, horizon: int) -> dict:
    """The selection sample's settings: the evaluation teacher, the horizon and its size."""
    teacher = (study.get("finetune") or {}).get("teacher") or study["teacher"]
    return {
        "study": study_name,
        "teacher": teacher,
        "horizon": int(horizon),
        "n_select": study["selection"]["n_select"],
        "code": of_job("select_data", _uses([teacher])),
    }


def train_spec(study_name: str, study: dict, model_name: str, horizon: int) -> dict:
    """The science settings of one (study, model, horizon) training job."""
    model = dict(study["models"][model_name])
    model.pop("finetune", None)  # the model's own fine-tuning settings: finetune_spec reads them
    train = dict(model.pop("train", None) or study["train"])
    learner = train.pop("learner", None)  # absent, not None, without one: older specs (and caches) stay valid
    if learner is not None:
        train["learner"] = learner
    return {
        "study": study_name,
        "teacher": study["teacher"],
        "model_name": model_name,
        "model": model,
        "train": train,
        "horizon": int(horizon),
        "seeds": study["seeds"],
        "code": of_job("train", _uses([study["teacher"]], model["class"], (learner or {}).get("name"))),
    }


def finetune_spec(study_name: str, study: dict, model_name: str, horizon: int) -> dict:
    """The fine-tuning job's settings, shaped like a training spec (so evaluation reads it alike):
    teacher and train are the fine-tuning ones; `pretrain` is the training spec it starts from."""
    pretrain = train_spec(study_name, study, model_name, horizon)
    ft = study["finetune"]
    own = study["models"][model_name].get("finetune")  # models.m.finetune: this model's settings
    return {
        **pretrain,
        "teacher": ft["teacher"],
        "train": own or ft["train"],
        "seeds": ft.get("seeds") or study["seeds"],
        "pretrain": pretrain,
        "code": of_job("finetune", _uses([ft["teacher"]], pretrain["model"]["class"])),
    }


def fit_spec(study_name: str, study: dict, model_name: str, horizon: int) -> dict:
    """The spec of the job whose checkpoints a cell evaluates: fine-tuning where the study has it."""
    return (finetune_spec if study["finetune"] else train_spec)(study_name, study, model_name, horizon)


def _fit_uses(fit: dict) -> frozenset[tuple[str, str]]:
    """The registry entries a job on a fitted cell reads: its teacher, model and learner (whose
    decoders, TTT, are evaluated too)."""
    learner = (fit["train"] or {}).get("learner") or {}
    return _uses([fit["teacher"]], fit["model"]["class"], learner.get("name"))


def cell_evaluate_spec(study_name: str, study: dict, model_name: str, horizon: int) -> dict:
    """The evaluate spec of one cell: its fitted (fine-tuned where the study fine-tunes) spec."""
    return evaluate_spec(fit_spec(study_name, study, model_name, horizon), study["evaluate"])


def evaluate_spec(fit: dict, evaluate: dict) -> dict:
    """The evaluate job's science settings: its training (or fine-tuning) spec plus the evaluation settings."""
    return {**fit, "evaluate": evaluate, "evaluate_code": of_job("evaluate", _fit_uses(fit))}


def select_spec(evaluate: dict, selection: dict) -> dict:
    """The selection job's settings: its evaluation spec plus the selection settings."""
    return {**evaluate, "selection": selection, "selection_code": of_job("select", _fit_uses(evaluate))}


def aggregate_spec() -> dict:
    """What a study's tables depend on beyond their inputs: the aggregation code."""
    return {"code": of_job("aggregate")}


def plot_spec(study: dict) -> dict:
    """What a study's figures depend on: its evaluation settings and the plotting code."""
    spec = {
        "evaluate": study["evaluate"],
        "selection": study["selection"],
        "figures": study["figures"],
        "code": of_job("plot"),
    }
    if "hard_instance" in study["figures"]:  # KL >= H/(4n) reads the sample size n
        spec["n_train"] = study["data"]["n_train"]
    return spec
