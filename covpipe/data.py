"""The data stage: training samples (one per seed) and a held-out evaluation set per horizon.

train.parquet: seed, cls, prompt, response; n_train rows per seed, y ~ pi_D.
eval.parquet: cls, prompt, response, teacher_logp (log pi_D(y|x), nats, summed over tokens);
n_eval rows per class, so rare classes are measured as well as common ones; metrics reweight
them by the class weights. A study with `finetune:` is evaluated on its fine-tuning teacher.
select.parquet (studies with `selection:`): n_select rows drawn from the evaluation teacher's
mixture, from a random stream of their own, so selection never sees evaluation data.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from . import io
from .seeding import derive_seed
from .teachers import build_teacher


def run(train_path, eval_path, spec: dict) -> None:
    teacher = build_teacher(spec["teacher"])
    h = spec["horizon"]
    parts = []
    # seed -1: one sample that every seed trains on
    for s in [-1] if spec.get("shared_across_seeds") else range(spec["seeds"]):
        rng = np.random.default_rng(derive_seed(spec["study"], "train-data", h, s))
        batch = teacher.sample(spec["n_train"], h, rng)
        parts.append(io.batch_to_frame(batch, seed=pl.Series(np.full(len(batch), s), dtype=pl.Int32)))
    io.write_parquet(pl.concat(parts), train_path, spec, "data")
    io.write_provenance(train_path, spec)

    teacher = build_teacher(spec.get("eval_teacher", spec["teacher"]))
    parts, extra = [], {}
    for c in range(len(teacher.class_names)):
        rng = np.random.default_rng(derive_seed(spec["study"], "eval-data", h, c))
        batch = teacher.sample(spec["n_eval"], h, rng, cls=c)
        logp = teacher.sequence_log_probs(batch.prompt, batch.response)
        parts.append(io.batch_to_frame(batch).with_columns(teacher_logp=pl.Series(logp, dtype=pl.Float64)))
        if hasattr(teacher, "inherent_variance"):
            # sigma*^2 (paper Eq. 8): exact per prefix, averaged over the held-out y ~ pi_D.
            extra[f"sigma_star_sq[{teacher.class_names[c]}]"] = float(
                teacher.inherent_variance(batch.prompt, batch.response).sum(1).mean()
            )
    io.write_parquet(pl.concat(parts), eval_path, spec, "data")
    io.write_provenance(eval_path, spec, **extra)


def run_select(select_path, spec: dict) -> None:
    """select.parquet: held-out (x, y ~ pi_D) for checkpoint selection; no pi_D column (selection never reads it)."""
    teacher = build_teacher(spec["teacher"])
    rng = np.random.default_rng(derive_seed(spec["study"], "select-data", spec["horizon"]))
    io.write_parquet(
        io.batch_to_frame(teacher.sample(spec["n_select"], spec["horizon"], rng)), select_path, spec, "select_data"
    )
    io.write_provenance(select_path, spec)
