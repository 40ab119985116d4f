"""Adapter: the select rule -> covpipe.selection.run (the device from config, not params)."""

from covpipe import selection
from covpipe.cli import execution_settings, setup_logging

setup_logging(snakemake.log[0])
selection.run(
    snakemake.input.select,
    snakemake.input.checkpoints,
    snakemake.input.metrics,
    snakemake.output[0],
    snakemake.params.spec,
    device=execution_settings(snakemake.config)["device"],
)
