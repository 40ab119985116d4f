"""Resumable training state: a killed training job picks up where its last saved state left off.

One file per trial, `<checkpoints file>.resume/seed~<s>.pt`, rewritten atomically (temporary
name, then rename) at every training checkpoint and at most every `SAVE_SECONDS` in between. It
holds everything the rest of the trial depends on, so a resumed trial ends bit-identical to an
uninterrupted one:

- model parameters and optimizer state (Adam moments and step counts),
- the mini-batch generator's state (torch, or numpy for fine-tuning's online samples) and
  torch's global RNG state (dropout draws from it),
  plus the CUDA RNG states on a GPU,
- the step reached, the checkpoints and training-log rows recorded so far, the running loss sum
  of the next log row, the seconds spent,
- the trial's spec and seed: a state written for other settings is ignored, never resumed.

The directory sits beside the job's outputs, not among them, so Snakemake keeps it when it
deletes an incomplete job's outputs before `--rerun-incomplete`. `training.write_outputs` (train
and finetune) removes it once the job's outputs are written.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from . import io

FORMAT = 1
SAVE_SECONDS = 300.0  # between checkpoints, a state at least this often (long runs, sparse checkpoints)
log = logging.getLogger(__name__)


def state_dir(checkpoints_path) -> Path:
    """Where the resumable states of one training job live: `<checkpoints>.resume/`."""
    return Path(f"{checkpoints_path}.resume")


def trial_path(directory, seed: int) -> Path:
    return Path(directory) / f"seed~{seed}.pt"


def _rng_state(rng):
    """The state of a torch.Generator (tensor) or a numpy Generator (dict of ints)."""
    return rng.get_state() if isinstance(rng, torch.Generator) else rng.bit_generator.state


def save(
    path,
    *,
    spec: dict,
    seed: int,
    step: int,
    model,
    optimizer,
    generator,
    checkpoints: dict,
    rows: list,
    running: tuple[float, int],
    seconds: float,
) -> None:
    """Write one trial's state after `step` optimizer steps (atomic: no partial file is ever read)."""
    state = {
        "covpipe_resume_format": FORMAT,
        "spec": spec,
        "seed": seed,
        "step": step,
        "model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "batch_rng": _rng_state(generator),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "checkpoints": checkpoints,
        "rows": rows,
        "running": list(running),  # (loss sum, count) since the last checkpoint's log row
        "seconds": seconds,
    }
    io.save_torch(state, path)


def load(path, *, spec: dict, seed: int) -> dict | None:
    """The saved state of this trial, or None when there is none or it belongs to other settings."""
    if path is None or not Path(path).exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a foreign or damaged file: start over rather than fail the job
        log.warning("%s: unreadable resume state (%s); training this trial from step 0", path, exc)
        return None
    if not isinstance(state, dict) or state.get("covpipe_resume_format") != FORMAT:
        log.warning("%s: resume state of another covpipe version; training from step 0", path)
        return None
    if state["spec"] != spec or state["seed"] != seed:
        log.warning("%s: resume state written for other settings; training from step 0", path)
        return None
    return state


def restore(state: dict, model, optimizer, generator) -> None:
    """Put model, optimizer and RNGs back to where `state` was saved (`generator`: the trial's
    batch RNG, a torch.Generator or a numpy Generator)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if isinstance(generator, torch.Generator):
        generator.set_state(state["batch_rng"])
    else:
        generator.bit_generator.state = state["batch_rng"]
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def clear(directory) -> None:
    """Remove a finished job's states (its outputs now hold everything they held)."""
    shutil.rmtree(directory, ignore_errors=True)
