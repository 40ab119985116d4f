"""Graph sampler: `Graph.sample` (a batch drawn with array operations) against `Graph._sample_loop`
(one graph at a time in Python, the sampler as first written; same distribution).

Graphs per second for the default study teachers: `graph_horizon` at H = 8, 16, 24 and
`graph_finetune` at H = 8 (its fine-tuning teacher, 0.9 G_1 / 0.1 G_2, and its pre-training
mixture), at batch 64 (one online fine-tuning step draws 64 fresh graphs) and 20,000 (the data
stage's n_train). Target: the batched sampler at least 10x the loop in every cell. The loop's rate
does not depend on the batch (one graph at a time), so at 20,000 it is timed on 4,000 graphs
(800 with --quick).
"""

from __future__ import annotations

import numpy as np
from common import Figure, default_study, interleaved

TARGET = 10.0


def teachers():
    """(label, teacher, horizon) of the default studies."""
    from covpipe.teachers import build_teacher

    horizon = default_study("graph_horizon")
    finetune = default_study("graph_finetune")
    out = [(f"graph_horizon H={h}", build_teacher(horizon["teacher"]), h) for h in horizon["horizons"]]
    h = finetune["horizons"][0]
    out.append((f"graph_finetune H={h}, fine-tuning", build_teacher(finetune["finetune"]["teacher"]), h))
    out.append((f"graph_finetune H={h}, pre-training", build_teacher(finetune["teacher"]), h))
    return out


def rates(teacher, horizon: int, batch: int, loop_batch: int, repeats: int) -> tuple[float, float]:
    """(batched, loop) graphs per second, best of interleaved repeats."""
    rng = np.random.default_rng(0)
    teacher.sample(batch, horizon, rng)  # warm up
    # Small batches are timed in groups so each timing is long enough to be measured well.
    group = max(1, 2000 // batch)
    best = interleaved(
        {
            "batched": lambda: [teacher.sample(batch, horizon, rng) for _ in range(group)],
            "loop": lambda: teacher._sample_loop(loop_batch, horizon, rng),
        },
        repeats,
    )
    return group * batch / best["batched"], loop_batch / best["loop"]


def run(quick: bool = False) -> list[Figure]:
    repeats = 2 if quick else 3
    figures = []
    for batch, loop_batch, purpose in (
        (64, 64 * (4 if quick else 16), "online fine-tuning step"),
        (20000, 800 if quick else 4000, "data generation"),
    ):
        cells = []
        for label, teacher, horizon in teachers():
            fast, slow = rates(teacher, horizon, batch, loop_batch, repeats)
            cells.append((label, fast, slow))
            print(
                f"  batch {batch:>6,} {label:<36} batched {fast:>10,.0f}  loop {slow:>8,.0f} graphs/s  "
                f"ratio {fast / slow:5.1f}"
            )
        worst = min(fast / slow for _, fast, slow in cells)
        figures.append(
            Figure(
                9,
                f"graph sampler, batch {batch:,} ({purpose}): batched vs per-graph loop, worst of "
                f"{len(cells)} teachers",
                f">= {TARGET:g}x",
                " / ".join(f"{fast:,.0f} vs {slow:,.0f}" for _, fast, slow in cells) + " graphs/s",
                worst,
                worst >= TARGET,
            )
        )
    return figures
