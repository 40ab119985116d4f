"""The finetune stage: online fine-tuning from each seed's final pre-train checkpoint (paper App. C.2).

A study with a `finetune:` section pre-trains as usual (the train stage, on its fixed dataset)
and then, per seed, continues from the last pre-train checkpoint with fresh samples of the
fine-tuning teacher at every step (online: no example is seen twice). The fine-tuning teacher is
the study's teacher with `finetune.teacher`'s keys replaced (Figure 1: class weights 0.9 G_1 /
0.1 G_2 instead of the uniform pre-training mixture). Checkpoint 0 is the pre-trained model
itself, so curves start where pre-training ended. Models without gradient training keep their
pre-trained fit as their only checkpoint. `finetune.seeds` may exceed the study's seeds: fine-tuning
run s starts from pre-trained seed s mod seeds (one costly pre-training, several fine-tuning runs).

Being a stage of its own, changing a fine-tuning setting reruns fine-tuning and what follows it,
never pre-training. The loss is the mean per-token NLL (nats/token), as in pre-training.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from . import io, resume, training
from .distribute import Execution
from .models import Vocab, build_model
from .seeding import derive_seed
from .teachers import build_teacher

log = logging.getLogger(__name__)


def finetune_trial(spec: dict, seed: int, state: dict, device: str = "cpu", resume_dir=None) -> dict:
    """Fine-tune one seed from `state` (a state_dict). Returns {"checkpoints": {step: state}, "log": rows}.

    The training loop (covpipe.training) on an online teacher stream, with the start as checkpoint 0.
    With `resume_dir`, saves and resumes its state there as `train.train_trial` does (covpipe.resume).
    """
    teacher = build_teacher(spec["teacher"])
    horizon = spec["horizon"]
    model = build_model(spec["model"], Vocab.of(teacher, horizon), teacher=teacher)
    model.load_state_dict(state)
    if not model.trainable:
        return {
            "checkpoints": {0: state},
            "log": [{"seed": seed, "step": 0, "train_loss": float("nan"), "seconds": 0.0}],
        }
    cfg = spec["train"]
    rng = np.random.default_rng(derive_seed(spec["study"], "finetune-data", spec["model_name"], horizon, seed))
    source = training.TeacherStream(teacher, horizon, cfg["batch_size"], rng, device)  # fresh samples every step
    steps = training.ModelSteps(model.to(device), seed, cfg, source)
    return training.optimize_one(steps, spec, resume_dir=resume_dir, start=True, what="fine-tuning ")


def run(pretrain_path, checkpoints_path, log_path, spec: dict, **execution) -> None:
    """The finetune stage for one (study, model, horizon): every seed, then both outputs.
    `execution`: threads, backend, address, device (covpipe.distribute.Execution)."""
    pre = io.load_torch(pretrain_path)
    seeds = list(range(spec["seeds"]))
    pretrained = [s % spec["pretrain"]["seeds"] for s in seeds]
    missing = [s for s in pretrained if s not in pre["trials"]]
    if missing:
        raise ValueError(f"{pretrain_path}: no pre-trained checkpoint for seed {missing[0]}; rerun training")
    ex = Execution(**execution).resolved(len(seeds))
    log.info(
        "finetune %s/%s H=%d: %d seeds on %s from pre-train step %d",
        spec["study"],
        spec["model_name"],
        spec["horizon"],
        len(seeds),
        ex.backend,
        max(pre["trials"][0]),
    )
    states = str(resume.state_dir(os.path.abspath(checkpoints_path)))  # resumable states, removed once outputs exist
    trials = [(spec, s, pre["trials"][p][max(pre["trials"][p])], ex.device, states) for s, p in zip(seeds, pretrained)]
    started = time.perf_counter()
    results = ex.run_seeds(finetune_trial, trials, spec, seeds)
    training.write_outputs(results, seeds, spec, checkpoints_path, log_path, "finetune", ex, started)
