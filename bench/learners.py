"""Batched learners (issue 16, item 5): the seeds of a learner job as one computation
(`covpipe.learners.fitting.fit_seeds` over a `ContextView`: counts for sequence gradients, the compiled
walk for token SGD) against the per-seed loop the study ran before (one `Learner.run` per seed over
the per-position `LinearView`, whose cost grows with H and the batch).

Training sequences per second (all seeds together) of the interventions study's learners on its
AR-linear teacher (V = 8, d = 8, B = 16) at 8 seeds, paper step sizes, checkpoints every power of 2
(each its own run where the rule reads T), at H = 8 and H = 128. Target: batched >= 4x the loop
in every cell. The loop is timed on fewer sequences (its rate does not depend on the budget).
"""

from __future__ import annotations

import time

import numpy as np
from common import Figure

TARGET = 4.0
SEEDS = 8
TEACHER = {"name": "ar_linear", "vocab_size": 8, "dim": 8, "window": 2, "scale": 16.0, "theta_norm": 1.0, "seed": 0}
LEARNERS = [
    {"name": "seq_sgd"},
    {"name": "normalized_sgd"},
    {"name": "token_sgd"},
    {"name": "distill_truncated"},
    {"name": "mle_exact"},
]


def _setup(horizon: int, n: int):
    from covpipe.models import Vocab, build_model
    from covpipe.models.base import as_tensor
    from covpipe.teachers import build_teacher

    teacher = build_teacher(TEACHER)
    batches = [teacher.sample(n, horizon, np.random.default_rng(s)) for s in range(SEEDS)]
    models = [build_model({"class": "ar_linear"}, Vocab.of(teacher, horizon), teacher=teacher) for _ in range(SEEDS)]
    return teacher, models, [as_tensor(b.prompt) for b in batches], [as_tensor(b.response) for b in batches]


def _checkpoints(n: int) -> list[int]:
    return [2**k for k in range(5, int(np.log2(n)) + 1)]


def batched_rate(learner: dict, horizon: int, n: int) -> float:
    from covpipe.learners.fitting import fit_seeds

    teacher, models, prompts, responses = _setup(horizon, n)
    spec = {
        "study": "bench",
        "teacher": TEACHER,
        "model_name": "m",
        "model": {"class": "ar_linear"},
        "horizon": horizon,
        "train": {"steps": n, "checkpoints": _checkpoints(n), "learner": learner},
    }
    warm = {**spec, "train": {**spec["train"], "steps": 32, "checkpoints": [32]}}
    fit_seeds(
        warm, models, teacher, [p[:32] for p in prompts], [r[:32] for r in responses], list(range(SEEDS))
    )  # warm up (compiles the walk)
    started = time.perf_counter()
    fit_seeds(spec, models, teacher, prompts, responses, list(range(SEEDS)))
    return SEEDS * n / (time.perf_counter() - started)


def loop_rate(learner: dict, horizon: int, n: int) -> float:
    """The path before batching: per seed, sigma*^2, a LinearView and one Learner.run."""
    from covpipe.learners.base import Problem
    from covpipe.learners.fitting import build_learner
    from covpipe.learners.views import LinearView

    teacher, models, prompts, responses = _setup(horizon, n)
    started = time.perf_counter()
    for model, p, r in zip(models, prompts, responses):
        sigma2 = float(teacher.inherent_variance(p.numpy(), r.numpy()).sum(1).mean())
        problem = Problem(
            horizon,
            model.feature_bound,
            sigma2,
            teacher_steps=lambda p=p, r=r: teacher.step_log_probs(p.numpy(), r.numpy()),
        )
        view = LinearView(model, p, r)
        build_learner(learner, problem, has_bound=True).run(view, view.initial(), _checkpoints(n))
    return SEEDS * n / (time.perf_counter() - started)


def run(quick: bool = False) -> list[Figure]:
    cells = []
    for horizon, n_fast, n_loop in ((8, 8192, 1024), (128, 2048, 256)):
        if quick:
            n_fast, n_loop = n_fast // 4, n_loop // 4
        for learner in LEARNERS:
            fast, slow = batched_rate(learner, horizon, n_fast), loop_rate(learner, horizon, n_loop)
            cells.append((f"{learner['name']} H={horizon}", fast, slow))
            print(
                f"  {learner['name']:<18} H={horizon:<4} batched {fast:>10,.0f}  per-seed loop {slow:>9,.0f} "
                f"sequences/s  ratio {fast / slow:6.1f}"
            )
    worst = min(fast / slow for _, fast, slow in cells)
    return [
        Figure(
            10,
            f"batched learners, {SEEDS} seeds: sequences/s against the per-seed loop, worst of "
            f"{len(cells)} (learner, H) cells",
            f">= {TARGET:g}x",
            ", ".join(f"{label} {fast / slow:.1f}x" for label, fast, slow in cells),
            worst,
            worst >= TARGET,
        )
    ]
