"""Adapter: the evaluate rule -> covpipe.evaluate.run (execution settings from config, not params)."""

from covpipe import evaluate
from covpipe.cli import execution_settings, setup_logging

setup_logging(snakemake.log[0])
evaluate.run(
    snakemake.input.eval,
    snakemake.input.checkpoints,
    snakemake.output.metrics,
    snakemake.output.log_ratios,
    snakemake.params.spec,
    threads=snakemake.threads,
    **execution_settings(snakemake.config),
)
