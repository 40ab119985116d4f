"""Adapter: the aggregate rule -> covpipe.aggregate.run."""

from covpipe import aggregate
from covpipe.cli import setup_logging

setup_logging(snakemake.log[0])
aggregate.run(
    snakemake.input.metrics,
    snakemake.input.train_logs,
    snakemake.output.metrics,
    snakemake.output.train_log,
    finetune_log_paths=snakemake.input.finetune_logs,
)
