"""Adapter: the finetune rule -> covpipe.finetune.run (execution settings from config, not params)."""

from covpipe import finetune
from covpipe.cli import execution_settings, setup_logging

setup_logging(snakemake.log[0])
finetune.run(
    snakemake.input[0],
    snakemake.output.checkpoints,
    snakemake.output.log_table,
    snakemake.params.spec,
    threads=snakemake.threads,
    **execution_settings(snakemake.config),
)
