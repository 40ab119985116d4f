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
import polars as pl
import torch

from . import io, resume, train
from .distribute import resolve_backend, run_trials
from .models import Vocab, build_model
from .models.base import as_tensor
from .seeding import derive_seed
from .teachers import build_teacher

log = logging.getLogger(__name__)


def finetune_trial(spec: dict, seed: int, state: dict, device: str = "cpu", resume_dir=None) -> dict:
    """Fine-tune one seed from `state` (a state_dict). Returns {"checkpoints": {step: state}, "log": rows}.

    With `resume_dir`, saves and resumes its state there as `train.train_trial` does (covpipe.resume).
    """
    teacher = build_teacher(spec["teacher"])
    horizon = spec["horizon"]
    model = build_model(spec["model"], Vocab.of(teacher, horizon), teacher=teacher)
    model.load_state_dict(state)
    started = time.perf_counter()
    if not model.trainable:
        return {
            "checkpoints": {0: state},
            "log": [{"seed": seed, "step": 0, "train_loss": float("nan"), "seconds": 0.0}],
        }
    model = model.to(device)
    cfg = spec["train"]
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[cfg["optimizer"]]
    opt = opt_cls(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    rng = np.random.default_rng(derive_seed(spec["study"], "finetune-data", spec["model_name"], horizon, seed))
    wanted = set(cfg["checkpoints"])
    checkpoints = {0: train._state(model)}
    rows = [{"seed": seed, "step": 0, "train_loss": float("nan"), "seconds": 0.0}]
    running, count, last_report = 0.0, 0, started
    name = f"{spec['model_name']} H={horizon} seed {seed}"
    state_path = resume.trial_path(resume_dir, seed) if resume_dir is not None else None
    first, last_saved = 1, started
    if (saved := resume.load(state_path, spec=spec, seed=seed)) is not None:
        resume.restore(saved, model, opt, rng)
        checkpoints, rows, (running, count) = saved["checkpoints"], saved["rows"], saved["running"]
        first, started = saved["step"] + 1, started - saved["seconds"]
        log.info("%s: fine-tuning resumed at step %d/%d from %s", name, saved["step"], cfg["steps"], state_path)
    for step in range(first, cfg["steps"] + 1):
        train.set_lr(opt, cfg, step)
        batch = teacher.sample(cfg["batch_size"], horizon, rng)  # online: fresh samples every step
        loss = -model.token_log_probs(as_tensor(batch.prompt).to(device), as_tensor(batch.response).to(device)).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: fine-tuning loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running, count = running + loss.item(), count + 1
        now = time.perf_counter()
        if now - last_report >= train.PROGRESS_SECONDS:
            rate = step / (now - started)
            log.info(
                "%s: fine-tune step %d/%d, loss %.4f nats/token, %.1f steps/s, ETA %.0f s",
                name,
                step,
                cfg["steps"],
                loss.item(),
                rate,
                (cfg["steps"] - step) / rate,
            )
            last_report = now
        if step in wanted:
            checkpoints[step] = train._state(model)
            rows.append(
                {"seed": seed, "step": step, "train_loss": running / count, "seconds": time.perf_counter() - started}
            )
            running, count = 0.0, 0
        if state_path is not None and (step in wanted or now - last_saved >= resume.SAVE_SECONDS):
            resume.save(
                state_path,
                spec=spec,
                seed=seed,
                step=step,
                model=model,
                optimizer=opt,
                generator=rng,
                checkpoints=checkpoints,
                rows=rows,
                running=(running, count),
                seconds=time.perf_counter() - started,
            )
            last_saved = now
    return {"checkpoints": checkpoints, "log": rows}


def run(
    pretrain_path,
    checkpoints_path,
    log_path,
    spec: dict,
    *,
    threads: int = 1,
    backend: str = "auto",
    address: str = "local",
    device: str = "cpu",
) -> None:
    """The finetune stage for one (study, model, horizon): every seed, then both outputs."""
    pre = io.load_torch(pretrain_path)
    seeds = list(range(spec["seeds"]))
    pretrained = [s % spec["pretrain"]["seeds"] for s in seeds]
    missing = [s for s in pretrained if s not in pre["trials"]]
    if missing:
        raise ValueError(f"{pretrain_path}: no pre-trained checkpoint for seed {missing[0]}; rerun training")
    states = resume.state_dir(os.path.abspath(checkpoints_path))  # resumable states, removed once outputs exist
    trials = [
        (spec, s, pre["trials"][p][max(pre["trials"][p])], device, str(states)) for s, p in zip(seeds, pretrained)
    ]
    chosen = resolve_backend(backend, threads, len(trials), address)
    if chosen == "serial":
        torch.set_num_threads(threads)
    log.info(
        "finetune %s/%s H=%d: %d seeds on %s from pre-train step %d",
        spec["study"],
        spec["model_name"],
        spec["horizon"],
        len(trials),
        chosen,
        max(pre["trials"][0]),
    )
    started = time.perf_counter()
    results = run_trials(
        finetune_trial,
        trials,
        backend=chosen,
        address=address,
        num_cpus=threads,
        num_gpus=1 if device != "cpu" else 0,
        names=[f"{spec['model_name']} H={spec['horizon']} seed {s}" for s in seeds],
    )
    io.save_torch(
        {
            "covpipe_format": io.CHECKPOINT_FORMAT,
            "spec": spec,
            "trials": {s: r["checkpoints"] for s, r in zip(seeds, results)},
        },
        checkpoints_path,
    )
    table = pl.DataFrame([row for r in results for row in r["log"]]).with_columns(
        pl.lit(spec["study"]).alias("study"),
        pl.lit(spec["model_name"]).alias("model"),
        pl.lit(spec["horizon"]).alias("horizon"),
    )
    io.write_parquet(table.select("study", "model", "horizon", "seed", "step", "train_loss", "seconds"), log_path)
    io.write_provenance(log_path, spec, backend=chosen, threads=threads, wall_seconds=time.perf_counter() - started)
    resume.clear(states)
