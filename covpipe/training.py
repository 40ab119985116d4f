"""The optimizer loop that pre-training, fine-tuning and vectorized training share.

`optimize(steps, spec)` runs `spec["train"]`'s optimizer steps on one or several seeds at once:
the learning-rate schedule, a loss per seed (mean per-token NLL, nats/token), the NaN check,
progress lines, checkpoint rows, and resumable states (covpipe.resume) saved at every checkpoint
and at most every resume.SAVE_SECONDS. What differs between its callers lives in a `Steps`
object: `ModelSteps` trains one model on a batch source (`FixedSample`: mini-batches drawn with
replacement from a seed's sample; `TeacherStream`: fresh teacher samples every step, online);
covpipe.vectorized's stacked seeds are another `Steps`.

`write_outputs` is the tail of the train and finetune stages: the checkpoints file, the training
log table and its provenance.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Protocol

import polars as pl
import torch

from . import io, resume
from .distribute import seeds_name
from .models import build_model
from .models.base import as_tensor
from .seeding import derive_seed

PROGRESS_SECONDS = 10.0  # a progress line per job at most this often
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
log = logging.getLogger(__name__)


def make_optimizer(cfg: dict, params) -> torch.optim.Optimizer:
    """The train settings' optimizer over `params`: constant lr (see set_lr), weight decay."""
    return OPTIMIZERS[cfg["optimizer"]](params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


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


def seed_model(spec: dict, teacher, vocab, seed: int):
    """Seed `seed`'s freshly initialized model (its own torch seed, whatever runs it)."""
    torch.manual_seed(derive_seed(spec["study"], "init", spec["model_name"], spec["horizon"], seed))
    return build_model(spec["model"], vocab, teacher=teacher)


def batch_generator(spec: dict, seed: int) -> torch.Generator:
    """The torch generator that draws seed `seed`'s mini-batches from its fixed sample."""
    return torch.Generator().manual_seed(
        derive_seed(spec["study"], "batches", spec["model_name"], spec["horizon"], seed)
    )


def cpu_state(model) -> dict:
    """A copy of `model`'s state_dict on the CPU: a checkpoint."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# ---- batch sources -------------------------------------------------------------------------------


class FixedSample:
    """Mini-batches of `batch_size` rows drawn with replacement from one sample by a torch generator.
    prompt (n, P) and response (n, L) are tensors on the training device."""

    def __init__(self, prompt, response, batch_size: int, generator: torch.Generator):
        self.prompt, self.response, self.batch_size, self.generator = prompt, response, batch_size, generator

    def draw(self):
        idx = torch.randint(0, len(self.prompt), (self.batch_size,), generator=self.generator)
        idx = idx.to(self.prompt.device)
        return self.prompt[idx], self.response[idx]


class TeacherStream:
    """Online batches: `batch_size` fresh sequences of the teacher per draw, from a numpy generator."""

    def __init__(self, teacher, horizon: int, batch_size: int, generator, device: str = "cpu"):
        self.teacher, self.horizon, self.batch_size, self.generator = teacher, horizon, batch_size, generator
        self.device = device

    def draw(self):
        batch = self.teacher.sample(self.batch_size, self.horizon, self.generator)
        return as_tensor(batch.prompt).to(self.device), as_tensor(batch.response).to(self.device)


# ---- the loop -------------------------------------------------------------------------------------


class Steps(Protocol):
    """What `optimize` trains: S seeds, their optimizer, and how to read and write their state."""

    seeds: list
    opt: torch.optim.Optimizer

    def losses(self) -> torch.Tensor:
        """The next step's loss of every seed, (S,) nats/token, differentiable."""

    def state(self, i: int) -> dict:
        """Seed i's parameters as a checkpoint (on the CPU)."""

    def resumable(self, i: int) -> tuple:
        """(model, optimizer, generator) of seed i as resume.save writes them."""

    def restore(self, saved: list) -> None:
        """Put every seed back to its saved state (resume.load's dicts, one per seed)."""


class ModelSteps:
    """One seed: `model` trained on batches of `source` (FixedSample or TeacherStream)."""

    def __init__(self, model, seed: int, cfg: dict, source):
        self.model, self.source, self.seeds = model, source, [seed]
        self.opt = make_optimizer(cfg, model.parameters())

    def losses(self) -> torch.Tensor:
        prompt, response = self.source.draw()
        return -self.model.token_log_probs(prompt, response).mean().reshape(1)  # (1,), nats/token

    def state(self, i: int) -> dict:
        return cpu_state(self.model)

    def resumable(self, i: int) -> tuple:
        return self.model, self.opt, self.source.generator

    def restore(self, saved: list) -> None:
        resume.restore(saved[0], self.model, self.opt, self.source.generator)


def optimize(steps: Steps, spec: dict, *, resume_dir=None, start: bool = False, what: str = "") -> list:
    """`spec["train"]["steps"]` optimizer steps of every seed of `steps`; per seed, in order,
    (True, {"checkpoints": {step: state}, "log": [row, ...]}) or (False, FloatingPointError).

    A seed whose loss is not finite stops there (the exception says where); the others go on, their
    parameters never mix. `start`: the state before the first step is checkpoint 0 (train_loss NaN).
    With `resume_dir`, each seed's state is saved there (covpipe.resume, one file per seed); seeds
    that all have a state of the same step continue from it, bit-identical to an uninterrupted run.
    `what` prefixes the log lines ("fine-tuning ").
    """
    cfg, seeds, opt = spec["train"], steps.seeds, steps.opt
    n = len(seeds)
    started = last_report = last_saved = time.perf_counter()
    checkpoints = [{0: steps.state(i)} if start else {} for i in range(n)]
    rows = [[{"seed": s, "step": 0, "train_loss": float("nan"), "seconds": 0.0}] if start else [] for s in seeds]
    running, count = torch.zeros(n, dtype=torch.float64), 0
    paths = [None if resume_dir is None else resume.trial_path(resume_dir, s) for s in seeds]
    first = 1
    if (saved := saved_states(paths, spec, seeds)) is not None:
        steps.restore(saved)
        running, count = torch.tensor([st["running"][0] for st in saved], dtype=torch.float64), saved[0]["running"][1]
        checkpoints, rows = [st["checkpoints"] for st in saved], [st["rows"] for st in saved]
        first, started = saved[0]["step"] + 1, started - saved[0]["seconds"]
        for s, path in zip(seeds, paths):
            log.info(
                "%s: %sresumed at step %d/%d from %s",
                seeds_name(spec, [s]),
                what,
                saved[0]["step"],
                cfg["steps"],
                path,
            )
    alive, errors = torch.ones(n, dtype=torch.bool), {}
    wanted = set(cfg["checkpoints"])
    for step in range(first, cfg["steps"] + 1):
        set_lr(opt, cfg, step)
        losses = steps.losses()  # (S,), nats/token
        values = losses.detach().to("cpu", torch.float64)
        if not torch.isfinite(values).all():  # seeds stop here; the others go on
            for i in torch.nonzero(alive & ~torch.isfinite(values)).flatten().tolist():
                errors[i] = FloatingPointError(
                    f"{spec['model_name']} horizon {spec['horizon']} seed {seeds[i]}: {what}loss is {values[i].item()} at step {step}"
                )
                alive[i] = False
            if not alive.any():
                break
        opt.zero_grad(set_to_none=True)
        # Each seed's loss reaches the sum with gradient 1, so its gradient is its own; while every
        # seed lives the mask is skipped (a few small ops fewer per step, the same gradients).
        (losses[alive.to(losses.device)] if errors else losses).sum().backward()
        opt.step()
        running, count = running + (torch.where(alive, values, 0.0) if errors else values), count + 1
        now = time.perf_counter()
        if now - last_report >= PROGRESS_SECONDS:
            _progress(spec, seeds, what, step, values[alive], step / (now - started))
            last_report = now
        if step in wanted:
            seconds = time.perf_counter() - started  # the job's wall time: its seeds share every step
            for i in torch.nonzero(alive).flatten().tolist():
                checkpoints[i][step] = steps.state(i)
                rows[i].append(
                    {"seed": seeds[i], "step": step, "train_loss": running[i].item() / count, "seconds": seconds}
                )
            running, count = torch.zeros(n, dtype=torch.float64), 0
        if resume_dir is not None and (step in wanted or now - last_saved >= resume.SAVE_SECONDS):
            for i in torch.nonzero(alive).flatten().tolist():
                model, optimizer, generator = steps.resumable(i)
                resume.save(
                    paths[i],
                    spec=spec,
                    seed=seeds[i],
                    step=step,
                    model=model,
                    optimizer=optimizer,
                    generator=generator,
                    checkpoints=checkpoints[i],
                    rows=rows[i],
                    running=(running[i].item(), count),
                    seconds=time.perf_counter() - started,
                )
            last_saved = now
    return [
        (False, errors[i]) if i in errors else (True, {"checkpoints": checkpoints[i], "log": rows[i]}) for i in range(n)
    ]


def optimize_one(steps: ModelSteps, spec: dict, **kwargs) -> dict:
    """`optimize` for one seed: its result, or its FloatingPointError raised."""
    ((ok, result),) = optimize(steps, spec, **kwargs)
    if not ok:
        raise result
    return result


def _progress(spec, seeds, what, step, values, rate):
    log.info(
        "%s: %sstep %d/%d, loss %.4f nats/token%s, %.1f steps/s, ETA %.0f s",
        seeds_name(spec, seeds),
        what,
        step,
        spec["train"]["steps"],
        values.mean().item(),
        f" (mean of {len(values)} seeds)" if len(seeds) > 1 else "",
        rate,
        (spec["train"]["steps"] - step) / rate,
    )


def saved_states(paths, spec, seeds):
    """Every seed's saved state when all exist at one step, else None (the job then starts over:
    seeds trained together are saved together, so mixed steps mean a kill between two writes)."""
    if paths[0] is None:
        return None
    saved = [resume.load(p, spec=spec, seed=s) for p, s in zip(paths, seeds)]
    if any(st is None for st in saved) or len({st["step"] for st in saved}) != 1:
        if any(st is not None for st in saved):
            log.warning("%s: saved states are not all at one step; training from step 0", seeds_name(spec, seeds))
        return None
    return saved


# ---- the stage's outputs ---------------------------------------------------------------------------


def write_outputs(results, seeds, spec, checkpoints_path, log_path, stage: str, ex, started: float) -> None:
    """Write a training job's checkpoints file ({seed: {step: state}}, plus a learner's per-step
    hyperparameters) and its log table (train_loss in nats/token, seconds) with its provenance
    (Execution `ex`, wall seconds since perf_counter `started`); then drop the resumable states."""
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
        table.select("study", "model", "horizon", "seed", "step", "train_loss", "seconds"), log_path, spec, stage
    )
    io.write_provenance(
        log_path, spec, backend=ex.backend, threads=ex.threads, wall_seconds=time.perf_counter() - started
    )
    resume.clear(resume.state_dir(os.path.abspath(checkpoints_path)))
