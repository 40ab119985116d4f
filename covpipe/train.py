"""Training: one trial fits one model to one seed's training sample and returns its checkpoints.

Gradient-trained classes: `steps` optimizer steps (Adam or SGD, constant learning rate, weight
decay) on mini-batches drawn with replacement from the seed's sample; the loss is the mean
per-token negative log-likelihood in nats/token (the loop of covpipe.training). Count classes: the closed-form smoothed MLE of
the whole sample, saved as one checkpoint at the final step. A model whose train settings name a
`learner` (covpipe.learners: the paper's single-pass learners, MLE, token SGD) is fitted by it instead.

`run` is the stage: a (study, model, horizon) job that trains every seed through
`covpipe.distribute` and writes the checkpoints and the training log.
"""

from __future__ import annotations

import logging
import os
import time

import polars as pl

from . import io, resume, training, vectorized
from .distribute import Execution
from .models import Vocab
from .models.base import as_tensor
from .sequences import Batch
from .teachers import build_teacher

log = logging.getLogger(__name__)


def train_trial(spec: dict, seed: int, batch: Batch, device: str = "cpu", resume_dir=None) -> dict:
    """Fit one seed. Returns {"checkpoints": {step: state_dict on CPU}, "log": [row, ...]}.

    With `resume_dir`, a gradient-trained trial saves its state there at every checkpoint
    (covpipe.resume) and, when a state of the same spec and seed is there, continues from it.
    """
    teacher = build_teacher(spec["teacher"])
    vocab = Vocab.of(teacher, spec["horizon"])
    model = training.seed_model(spec, teacher, vocab, seed)
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
            "checkpoints": {step: training.cpu_state(model)},
            "log": [{"seed": seed, "step": step, "train_loss": nll, "seconds": time.perf_counter() - started}],
        }

    source = training.FixedSample(prompt, response, cfg["batch_size"], training.batch_generator(spec, seed))
    steps = training.ModelSteps(model, seed, cfg, source)
    return training.optimize_one(steps, spec, resume_dir=resume_dir)


def _learner_batched(spec: dict) -> bool:
    from .learners.fitting import batched

    teacher = build_teacher(spec["teacher"])
    return batched(spec, training.seed_model(spec, teacher, Vocab.of(teacher, spec["horizon"]), 0))


def _fit_learner_seeds(spec: dict, seeds: list, batches: list) -> list:
    """Every seed of a learner job as one batched computation (covpipe.learners.fitting.fit_seeds): the same
    models (per-seed initialization) and samples as `train_trial`, in this process."""
    from .learners.fitting import fit_seeds

    teacher = build_teacher(spec["teacher"])
    vocab = Vocab.of(teacher, spec["horizon"])
    models = [training.seed_model(spec, teacher, vocab, s) for s in seeds]
    return fit_seeds(
        spec, models, teacher, [as_tensor(b.prompt) for b in batches], [as_tensor(b.response) for b in batches], seeds
    )


def run(data_path, checkpoints_path, log_path, spec: dict, **execution) -> None:
    """The train stage: every seed of one (study, model, horizon), then write both outputs.
    `execution`: threads, backend, address, device (covpipe.distribute.Execution)."""
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
    batches = [io.frame_to_batch(data.filter(pl.col("seed").is_in([s, -1]))) for s in seeds]
    batched_learner = bool(spec["train"].get("learner")) and _learner_batched(spec)
    # Stacked seeds (covpipe.vectorized, 3 to 6x; batched learners) beat fanning them out one per
    # worker over the run's instance (2x on 2 cores): for 'auto' such a job is one trial.
    stacked = batched_learner or vectorized.supports(spec)
    ex = Execution(**execution)
    ex = ex.resolved(1 if stacked and ex.address == "run" else len(seeds))
    log.info(
        "train %s/%s H=%d: %d seeds on %s with %d threads",
        spec["study"],
        spec["model_name"],
        spec["horizon"],
        len(seeds),
        ex.backend,
        ex.threads,
    )
    # resumable per-trial states (absolute: Ray workers run elsewhere), removed once outputs exist
    states = str(resume.state_dir(os.path.abspath(checkpoints_path)))
    started = time.perf_counter()
    if batched_learner:  # AR-linear learners: seeds as one computation
        results = _fit_learner_seeds(spec, seeds, batches)
    elif vectorized.supports(spec):  # small classes: all seeds as one batched computation
        results = vectorized.train_seeds(spec, seeds, batches, ex, resume_dir=states)
    else:
        results = ex.run_seeds(
            train_trial, [(spec, s, b, ex.device, states) for s, b in zip(seeds, batches)], spec, seeds
        )
    training.write_outputs(results, seeds, spec, checkpoints_path, log_path, "train", ex, started)
