"""Training: one trial fits one model to one seed's training sample and returns its checkpoints.

Gradient-trained classes: `steps` optimizer steps (Adam or SGD, constant learning rate, weight
decay) on mini-batches drawn with replacement from the seed's sample; the loss is the mean
per-token negative log-likelihood in nats/token. Count classes: the closed-form smoothed MLE of
the whole sample, saved as one checkpoint at the final step. A model whose train settings name a
`learner` (covpipe.learners: the paper's single-pass learners, MLE, token SGD) is fitted by it instead.

`run` is the stage: a (study, model, horizon) job that trains every seed through
`covpipe.distribute` and writes the checkpoints and the training log.
"""

from __future__ import annotations

import logging
import math
import os
import time

import polars as pl
import torch

from . import io, resume, vectorized
from .distribute import resolve_backend, run_trials
from .models import Vocab, build_model
from .models.base import as_tensor
from .seeding import derive_seed
from .sequences import Batch
from .teachers import build_teacher

PROGRESS_SECONDS = 10.0  # a progress line per trial at most this often
log = logging.getLogger(__name__)


def train_trial(spec: dict, seed: int, batch: Batch, device: str = "cpu", resume_dir=None) -> dict:
    """Fit one seed. Returns {"checkpoints": {step: state_dict on CPU}, "log": [row, ...]}.

    With `resume_dir`, a gradient-trained trial saves its state there at every checkpoint
    (covpipe.resume) and, when a state of the same spec and seed is there, continues from it.
    """
    teacher = build_teacher(spec["teacher"])
    vocab = Vocab.of(teacher, spec["horizon"])
    model = _seed_model(spec, teacher, vocab, seed)
    prompt, response = as_tensor(batch.prompt), as_tensor(batch.response)
    if model.trainable and device != "cpu":
        model, prompt, response = model.to(device), prompt.to(device), response.to(device)
    cfg = spec["train"]
    if cfg.get("learner"):  # a registered learner (covpipe.learners) instead of the optimizer loop below
        from .learners.fitting import fit

        return fit(spec, model.cpu(), teacher, prompt, response, seed)
    started = time.perf_counter()
    if not model.trainable:
        model.fit_counts(prompt, response)
        step = cfg["steps"]
        # The reported training NLL reads at most 2,048 sequences: exact scoring of a large sample
        # by a reference model costs more than the fit itself.
        nll = -model.token_log_probs(prompt[:2048], response[:2048]).mean().item()
        return {
            "checkpoints": {step: _state(model)},
            "log": [{"seed": seed, "step": step, "train_loss": nll, "seconds": time.perf_counter() - started}],
        }

    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[cfg["optimizer"]]
    opt = opt_cls(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    gen = torch.Generator().manual_seed(
        derive_seed(spec["study"], "batches", spec["model_name"], spec["horizon"], seed)
    )
    wanted = set(cfg["checkpoints"])
    checkpoints, rows, running, count = {}, [], 0.0, 0
    name, last_report = f"{spec['model_name']} H={spec['horizon']} seed {seed}", started
    state_path = resume.trial_path(resume_dir, seed) if resume_dir is not None else None
    first, last_saved = 1, started
    if (state := resume.load(state_path, spec=spec, seed=seed)) is not None:
        resume.restore(state, model, opt, gen)
        checkpoints, rows, (running, count) = state["checkpoints"], state["rows"], state["running"]
        first, started = state["step"] + 1, started - state["seconds"]
        log.info("%s: resumed at step %d/%d from %s", name, state["step"], cfg["steps"], state_path)

    def save_state(step):
        resume.save(
            state_path,
            spec=spec,
            seed=seed,
            step=step,
            model=model,
            optimizer=opt,
            generator=gen,
            checkpoints=checkpoints,
            rows=rows,
            running=(running, count),
            seconds=time.perf_counter() - started,
        )

    for step in range(first, cfg["steps"] + 1):
        set_lr(opt, cfg, step)
        idx = torch.randint(0, len(batch), (cfg["batch_size"],), generator=gen).to(prompt.device)
        loss = -model.token_log_probs(prompt[idx], response[idx]).mean()  # nats/token
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{spec['model_name']} horizon {spec['horizon']} seed {seed}: loss is {loss.item()} at step {step}"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running, count = running + loss.item(), count + 1
        now = time.perf_counter()
        if now - last_report >= PROGRESS_SECONDS:
            rate = step / (now - started)
            log.info(
                "%s: step %d/%d, loss %.4f nats/token, %.1f steps/s, ETA %.0f s",
                name,
                step,
                cfg["steps"],
                loss.item(),
                rate,
                (cfg["steps"] - step) / rate,
            )
            last_report = now
        if step in wanted:
            checkpoints[step] = _state(model)
            rows.append(
                {"seed": seed, "step": step, "train_loss": running / count, "seconds": time.perf_counter() - started}
            )
            running, count = 0.0, 0
        if state_path is not None and (step in wanted or now - last_saved >= resume.SAVE_SECONDS):
            save_state(step)
            last_saved = now
    return {"checkpoints": checkpoints, "log": rows}


def _seed_model(spec: dict, teacher, vocab, seed: int):
    torch.manual_seed(derive_seed(spec["study"], "init", spec["model_name"], spec["horizon"], seed))
    return build_model(spec["model"], vocab, teacher=teacher)


def _learner_batched(spec: dict) -> bool:
    from .learners.fitting import batched

    teacher = build_teacher(spec["teacher"])
    return batched(spec, _seed_model(spec, teacher, Vocab.of(teacher, spec["horizon"]), 0))


def _fit_learner_seeds(spec: dict, seeds: list, batches: list) -> list:
    """Every seed of a learner job as one batched computation (covpipe.learners.fit_seeds): the same
    models (per-seed initialization) and samples as `train_trial`, in this process."""
    from .learners.fitting import fit_seeds

    teacher = build_teacher(spec["teacher"])
    vocab = Vocab.of(teacher, spec["horizon"])
    models = [_seed_model(spec, teacher, vocab, s) for s in seeds]
    return fit_seeds(
        spec, models, teacher, [as_tensor(b.prompt) for b in batches], [as_tensor(b.response) for b in batches], seeds
    )


def lr_at(cfg: dict, step: int) -> float:
    """The learning rate of step `step` (1-based): constant, or with `schedule: cosine` a linear
    warm-up over `warmup` steps and a cosine decay to lr * `min_lr_ratio` at the last step."""
    lr = cfg["lr"]
    if cfg.get("schedule", "constant") == "constant":
        return lr
    warm = cfg.get("warmup", 0)
    if step <= warm:
        return lr * step / warm
    floor = cfg.get("min_lr_ratio", 0.0)
    progress = (step - warm) / max(cfg["steps"] - warm, 1)
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(opt, cfg: dict, step: int) -> None:
    """Stateless: the rate is a function of the step, so a resumed run follows the same schedule."""
    if cfg.get("schedule", "constant") != "constant":
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)


def _state(model) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def run(
    data_path,
    checkpoints_path,
    log_path,
    spec: dict,
    *,
    threads: int = 1,
    backend: str = "auto",
    address: str = "local",
    device: str = "cpu",
) -> None:
    """The train stage: every seed of one (study, model, horizon), then write both outputs."""
    vocab = Vocab.of(build_teacher(spec["teacher"]), spec["horizon"])
    _, data = io.read_tokens(
        data_path, vocab, extra=("seed",), made_for={k: spec[k] for k in ("study", "teacher", "horizon")}
    )
    seeds = list(range(spec["seeds"]))
    present = set(data["seed"].unique().to_list())
    if -1 not in present and not set(seeds) <= present:
        raise ValueError(
            f"{data_path}: no training rows for seed {min(set(seeds) - present)} of {spec['seeds']}; "
            "rerun the data stage"
        )
    # seed -1 marks one dataset shared by every seed (data.shared_across_seeds)
    # resumable per-trial states (absolute: Ray workers run elsewhere), removed once outputs exist
    states = resume.state_dir(os.path.abspath(checkpoints_path))
    trials = [
        (spec, s, io.frame_to_batch(data.filter(pl.col("seed").is_in([s, -1]))), device, str(states)) for s in seeds
    ]
    batched_learner = bool(spec["train"].get("learner")) and _learner_batched(spec)
    # Stacked seeds (covpipe.vectorized, 3 to 6x; batched learners) beat fanning them out one per
    # worker over the run's instance (2x on 2 cores): for 'auto' such a job is one trial.
    stacked = batched_learner or vectorized.supports(spec)
    chosen = resolve_backend(backend, threads, 1 if stacked and address == "run" else len(trials), address)
    log.info(
        "train %s/%s H=%d: %d seeds on %s with %d threads",
        spec["study"],
        spec["model_name"],
        spec["horizon"],
        len(trials),
        chosen,
        threads,
    )
    if chosen == "serial":
        torch.set_num_threads(threads)
    started = time.perf_counter()
    if batched_learner:  # AR-linear learners: seeds as one computation
        results = _fit_learner_seeds(spec, seeds, [t[2] for t in trials])
    elif vectorized.supports(spec):  # small classes: all seeds as one batched computation
        results = vectorized.train_seeds(
            spec,
            seeds,
            [t[2] for t in trials],
            backend=chosen,
            address=address,
            threads=threads,
            device=device,
            resume_dir=str(states),
        )
    else:
        results = run_trials(
            train_trial,
            trials,
            backend=chosen,
            address=address,
            num_cpus=threads,
            num_gpus=1 if device != "cpu" else 0,
            names=[f"{spec['model_name']} H={spec['horizon']} seed {s}" for s in seeds],
        )
    for s, res in zip(seeds, results):
        last = res["log"][-1]
        log.info(
            "seed %d: %d checkpoints, final train loss %.4f nats/token, %.1f s",
            s,
            len(res["checkpoints"]),
            last["train_loss"],
            last["seconds"],
        )
    learner = {s: r["learner"] for s, r in zip(seeds, results) if "learner" in r}  # per seed: {step: hyperparameters}
    io.save_torch(
        {
            "covpipe_format": io.CHECKPOINT_FORMAT,
            "spec": spec,
            "trials": {s: r["checkpoints"] for s, r in zip(seeds, results)},
            **({"learner": learner} if learner else {}),
        },
        checkpoints_path,
    )
    table = pl.DataFrame([row for r in results for row in r["log"]]).with_columns(
        pl.lit(spec["study"]).alias("study"),
        pl.lit(spec["model_name"]).alias("model"),
        pl.lit(spec["horizon"]).alias("horizon"),
    )
    io.write_parquet(
        table.select("study", "model", "horizon", "seed", "step", "train_loss", "seconds"), log_path, spec, "train"
    )
    io.write_provenance(log_path, spec, backend=chosen, threads=threads, wall_seconds=time.perf_counter() - started)
    resume.clear(states)
