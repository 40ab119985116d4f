"""The aggregate stage: one long metrics table and one training log per study."""

from __future__ import annotations

import polars as pl

from . import io


def run(metrics_paths, train_log_paths, metrics_out, train_log_out) -> None:
    metrics = pl.concat([io.read_parquet(p) for p in metrics_paths], how="vertical")
    io.write_parquet(metrics.sort("model", "horizon", "seed", "step", "class", "metric", "level"), metrics_out)
    logs = pl.concat([io.read_parquet(p) for p in train_log_paths], how="vertical")
    io.write_parquet(logs.sort("model", "horizon", "seed", "step"), train_log_out)


def concat(paths, out, sort_by) -> None:
    """One table from per-job tables of the same schema (the selection tables)."""
    io.write_parquet(pl.concat([io.read_parquet(p) for p in paths], how="vertical").sort(sort_by), out)
