"""Every stage job's spec: the science settings it runs with, as plain builtins, built from the
validated config. The Snakemake rules (as `params`) and the `covpipe` CLI both build specs here,
so a job run either way sees the same settings; a changed spec reruns the job.

Imports no torch, numpy-heavy stage code or plotting: Snakemake imports this while it plans.
Each stage's VERSION is part of its specs: bump it when a change alters what the stage computes.
"""

from __future__ import annotations

DATA_VERSION = 1
TRAIN_VERSION = 2  # 2: vectorized seeds, covpipe.vectorized
LEARNERS_VERSION = 2  # what a learner or the TTT decoder computes (2: average iterates)
FINETUNE_VERSION = 2  # 2: the graph teacher's batched sampler draws other (equally distributed) online batches
EVALUATE_VERSION = 6  # 4: sigma_star_sq rows, learners' decoders (TTT) as models; 5: scores in chunks; 6: prefix_kl
SELECT_VERSION = 2


def data_spec(study_name: str, study: dict, horizon: int) -> dict:
    """The data job of one (study, horizon): its training samples and evaluation set."""
    data = dict(study["data"])
    if not data.get("shared_across_seeds"):
        data.pop("shared_across_seeds", None)  # the default adds nothing: keep specs (and caches) of older studies
    spec = {"study": study_name, "teacher": study["teacher"], "horizon": int(horizon),
            "seeds": study["seeds"], **data, "version": DATA_VERSION, **sampler_version(study["teacher"])}
    if study.get("finetune"):  # only then: older studies keep their specs (and caches)
        spec["eval_teacher"] = study["finetune"]["teacher"]
    return spec


def select_data_spec(study_name: str, study: dict, horizon: int) -> dict:
    """The selection sample's settings: the evaluation teacher, the horizon and its size."""
    teacher = (study.get("finetune") or {}).get("teacher") or study["teacher"]
    return {"study": study_name, "teacher": teacher, "horizon": int(horizon),
            "n_select": study["selection"]["n_select"], "version": DATA_VERSION, **sampler_version(teacher)}


def sampler_version(teacher: dict) -> dict:
    """{"sampler_version": v} for a teacher whose sampler has changed (v > 1), so only its studies'
    data reruns; {} otherwise (older studies keep their specs and caches)."""
    from .teachers import get_teacher

    v = get_teacher(teacher["name"]).sampler_version
    return {"sampler_version": v} if v > 1 else {}


def train_spec(study_name: str, study: dict, model_name: str, horizon: int) -> dict:
    """The science settings of one (study, model, horizon) training job."""
    model = dict(study["models"][model_name])
    model.pop("finetune", None)  # the model's own fine-tuning settings: finetune_spec reads them
    train = dict(model.pop("train", None) or study["train"])
    learner = train.pop("learner", None)  # absent, not None, without one: older specs (and caches) stay valid
    if learner is not None:
        train.update(learner=learner, learner_version=LEARNERS_VERSION)
    return {
        "study": study_name,
        "teacher": study["teacher"],
        "model_name": model_name,
        "model": model,
        "train": train,
        "horizon": int(horizon),
        "seeds": study["seeds"],
        "version": TRAIN_VERSION,
    }


def finetune_spec(study_name: str, study: dict, model_name: str, horizon: int) -> dict:
    """The fine-tuning job's settings, shaped like a training spec (so evaluation reads it alike):
    teacher and train are the fine-tuning ones; `pretrain` is the training spec it starts from."""
    pretrain = train_spec(study_name, study, model_name, horizon)
    ft = study["finetune"]
    own = study["models"][model_name].get("finetune")  # models.m.finetune: this model's settings
    return {**pretrain, "teacher": ft["teacher"], "train": own or ft["train"], "seeds": ft.get("seeds") or study["seeds"],
            "pretrain": pretrain, "version": FINETUNE_VERSION}


def fit_spec(study_name: str, study: dict, model_name: str, horizon: int) -> dict:
    """The spec of the job whose checkpoints a cell evaluates: fine-tuning where the study has it."""
    return (finetune_spec if study["finetune"] else train_spec)(study_name, study, model_name, horizon)


def evaluate_spec(fit: dict, evaluate: dict) -> dict:
    """The evaluate job's science settings: its training (or fine-tuning) spec plus the evaluation settings."""
    return {**fit, "evaluate": evaluate, "evaluate_version": EVALUATE_VERSION}


def select_spec(evaluate: dict, selection: dict) -> dict:
    """The selection job's settings: its evaluation spec plus the selection settings."""
    return {**evaluate, "selection": selection, "selection_version": SELECT_VERSION}


def plot_spec(study: dict) -> dict:
    """What a study's figures depend on: its evaluation settings and the plotting code version."""
    from .plots import VERSION as PLOTS_VERSION

    spec = {"evaluate": study["evaluate"], "selection": study["selection"], "figures": study["figures"],
            "version": PLOTS_VERSION}
    if "hard_instance" in study["figures"]:  # KL >= H/(4n) reads the sample size n
        spec["n_train"] = study["data"]["n_train"]
    return spec
