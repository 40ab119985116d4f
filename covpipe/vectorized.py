"""Vectorized multi-seed training: the S seeds of one (study, model, horizon) job trained as one
batched computation, for the small model classes where per-step overhead, not arithmetic, is
the cost (`ar_linear`, `gru`).

Each seed keeps what `covpipe.train.train_trial` gives it: its own initialization (same torch
seed), its own mini-batch stream (same generator) and its own optimizer state. The S parameter
sets are stacked along a leading seed axis, shape (S, ...); one step runs one batched forward
and backward over all seeds and sums the S losses, so the gradient with respect to seed s's
slice is seed s's own gradient. Adam, AdamW and SGD are elementwise, so one optimizer over the
stacked tensors is S independent optimizers. Results equal per-seed training within float
tolerance, not bit for bit: the batched kernels sum in another order (tests/test_vectorized.py).
A seed's result does not depend on which other seeds share its group.

Not vectorized: count classes (closed-form fits take milliseconds), reference models, and the
transformer, whose training step is arithmetic-bound already (bench/run.py vectorized_seeds).

The stacked models' log-likelihoods are covpipe.stacked's; the optimizer loop is covpipe.training's,
this module's `StackedSteps` the stacked seeds' part of it.
"""

from __future__ import annotations

import logging
import traceback

import numpy as np
import torch

from . import training
from .distribute import Execution, collect, seeds_name
from .models import Vocab
from .models.base import as_tensor
from .stacked import STACKED
from .teachers import build_teacher

log = logging.getLogger(__name__)


def supports(spec: dict) -> bool:
    """Whether the job trains vectorized: a class of STACKED (where it pays, measured by bench/run.py)
    fitted by train_trial's optimizer loop (a registered learner, covpipe.learners, fits its own way).
    The stacked AR-linear path reads context windows: a teacher whose own feature map has none (the
    hard instances' table features) trains seed by seed."""
    train = spec["train"] or {}
    if spec["model"]["class"] not in STACKED or train.get("learner") or train.get("schedule", "constant") != "constant":
        return False
    if spec["model"]["class"] == "ar_linear":
        features = getattr(build_teacher(spec["teacher"]), "features", None)
        return features is None or hasattr(features, "window")
    return True


# ---- training --------------------------------------------------------------------------------------


def train_seeds(spec: dict, seeds: list, batches: list, ex: Execution | None = None, resume_dir=None) -> list:
    """Every seed of one job, vectorized: results in seed order, as `train.train_trial` returns them.

    `ex`: a resolved Execution (default serial). Serial: one group of all seeds. Ray: one task per
    seed, the trials Ray fans out over a cluster (a group of one; its numbers equal the serial
    group's bit for bit). A failing seed (NaN loss) lets its group finish, then TrialsFailed names
    every failure. With `resume_dir`, each seed's state is saved there as train_trial saves it.
    """
    ex = ex or Execution(backend="serial")
    n_groups = 1 if ex.backend == "serial" else len(seeds)
    parts = [list(a) for a in np.array_split(np.arange(len(seeds)), n_groups)]
    trials = [(spec, [seeds[i] for i in part], [batches[i] for i in part], ex.device, resume_dir) for part in parts]
    log.info(
        "%s H=%d: %d seeds trained vectorized in %d group(s)",
        spec["model_name"],
        spec["horizon"],
        len(seeds),
        len(trials),
    )
    grouped = ex.run(train_group, trials, [seeds_name(spec, t[1]) for t in trials])
    return collect([o for group in grouped for o in group], [seeds_name(spec, [s]) for s in seeds])


def train_group(spec: dict, seeds: list, batches: list, device: str = "cpu", resume_dir=None) -> list:
    """Train `seeds` together. Returns [(True, {"checkpoints", "log"}) or (False, error text)] per seed.

    With `resume_dir`: every seed's state is saved at each checkpoint and at most every
    resume.SAVE_SECONDS, one file per seed in train_trial's format; a group whose seeds all have a
    state of the same step continues from it and ends bit-identical to an uninterrupted run.
    """
    outcomes = training.optimize(StackedSteps(spec, seeds, batches, device), spec, resume_dir=resume_dir)
    return [(ok, value if ok else "".join(traceback.format_exception_only(value))) for ok, value in outcomes]


class StackedSteps:
    """The seeds of one group as one stacked model (training.Steps): each seed initialized as
    train_trial initializes it, its own batch generator, one optimizer over the stacked tensors."""

    def __init__(self, spec: dict, seeds: list, batches: list, device: str = "cpu"):
        teacher = build_teacher(spec["teacher"])
        vocab = Vocab.of(teacher, spec["horizon"])
        models = [training.seed_model(spec, teacher, vocab, s) for s in seeds]
        self.template = models[0].to(device)
        if any(True for _ in self.template.buffers()):
            raise ValueError(
                f"{spec['model']['class']}: vectorized training stacks parameters only; this class has buffers"
            )
        self.params = {
            name: torch.stack([dict(m.named_parameters())[name].detach() for m in models]).to(device).requires_grad_()
            for name, _ in self.template.named_parameters()
        }
        make_inputs, self.token_log_probs = STACKED[spec["model"]["class"]]
        cfg = spec["train"]
        self.seeds, self.batch_size, self.batches = seeds, cfg["batch_size"], batches
        self.opt = training.make_optimizer(cfg, list(self.params.values()))
        self.gens = [training.batch_generator(spec, s) for s in seeds]
        with torch.no_grad():
            inputs = [
                make_inputs(self.template, as_tensor(b.prompt).to(device), as_tensor(b.response).to(device))
                for b in batches
            ]
        if len({len(b) for b in batches}) == 1:  # one gather per step instead of one per seed
            inputs = {k: torch.stack([x[k] for x in inputs]) for k in inputs[0]}  # (S, n, ...)
        self.inputs, self.device = inputs, device
        self.seed_axis, self.n_rows = torch.arange(len(seeds), device=device)[:, None], len(batches[0])

    def losses(self) -> torch.Tensor:
        idx = [
            torch.randint(0, len(b), (self.batch_size,), generator=g).to(self.device)
            for b, g in zip(self.batches, self.gens)
        ]
        inputs, n = self.inputs, len(self.seeds)
        if isinstance(inputs, dict):  # rows of the flattened (S * n, ...) inputs: a plain row copy
            flat_rows = (self.seed_axis * self.n_rows + torch.stack(idx)).view(-1)
            batch = {
                k: v.view(-1, *v.shape[2:]).index_select(0, flat_rows).view(n, -1, *v.shape[2:])
                for k, v in inputs.items()
            }  # (S, B, ...)
        else:
            batch = {k: torch.stack([x[k][i] for x, i in zip(inputs, idx)]) for k in inputs[0]}
        return -self.token_log_probs(self.template, self.params, batch).mean((1, 2))  # (S,), nats/token

    def state(self, i: int) -> dict:
        return {k: v[i].detach().to("cpu", copy=True) for k, v in self.params.items()}

    def resumable(self, i: int) -> tuple:
        return _SeedState(self.params, i), _SeedState(self.opt.state_dict(), i), self.gens[i]

    def restore(self, saved: list) -> None:
        """Stack the seeds' saved parameters, optimizer moments and generators back."""
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(torch.stack([st["model"][name] for st in saved]).to(p.device))
        state = {}
        for j, first in saved[0]["optimizer"]["state"].items():
            state[j] = {
                k: torch.stack([st["optimizer"]["state"][j][k] for st in saved])
                if torch.is_tensor(v) and v.dim() > 0
                else v
                for k, v in first.items()
            }
        self.opt.load_state_dict({"state": state, "param_groups": self.opt.state_dict()["param_groups"]})
        for g, st in zip(self.gens, saved):
            g.set_state(st["batch_rng"])
        torch.set_rng_state(saved[0]["torch_rng"])


class _SeedState:
    """state_dict() of seed i's slice of stacked parameters or of a stacked optimizer's state:
    what a per-seed model or optimizer would hold, so the saved state is train_trial's format."""

    def __init__(self, stacked: dict, i: int):
        self.stacked, self.i = stacked, i

    def state_dict(self) -> dict:
        if "param_groups" not in self.stacked:  # parameters {name: (S, ...)}
            return {k: v[self.i].detach() for k, v in self.stacked.items()}
        # a copy, not a view: torch.save would write the whole stack's storage (step counts are 0-d)
        pick = lambda v: v[self.i].clone() if torch.is_tensor(v) and v.dim() > 0 else v  # noqa: E731
        return {
            "state": {j: {k: pick(v) for k, v in st.items()} for j, st in self.stacked["state"].items()},
            "param_groups": self.stacked["param_groups"],
        }
