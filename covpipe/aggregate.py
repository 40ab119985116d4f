"""The aggregate stage: one long metrics table and one training log per study."""

from __future__ import annotations

import polars as pl

from . import io


def run(metrics_paths, train_log_paths, metrics_out, train_log_out, finetune_log_paths=()) -> None:
    """One metrics table, and one training log whose `stage` column ("train", "finetune") keeps the
    pre-training and fine-tuning steps of a fine-tuning study apart (both count from their own start)."""
    metrics = pl.concat([io.read_parquet(p) for p in metrics_paths], how="vertical")
    io.write_parquet(metrics.sort("model", "horizon", "seed", "step", "class", "metric", "level"), metrics_out)
    logs = pl.concat(
        [
            io.read_parquet(p).with_columns(stage=pl.lit(stage))
            for stage, paths in (("train", train_log_paths), ("finetune", finetune_log_paths))
            for p in paths
        ],
        how="vertical",
    )
    io.write_parquet(logs.sort("model", "horizon", pl.col("stage") == "finetune", "seed", "step"), train_log_out)


def concat(paths, out, sort_by) -> None:
    """One table from per-job tables of the same schema (the selection tables)."""
    io.write_parquet(pl.concat([io.read_parquet(p) for p in paths], how="vertical").sort(sort_by), out)
