"""Adapter: the select rule -> covpipe.selection.run."""

from covpipe import selection
from covpipe.cli import setup_logging

setup_logging(snakemake.log[0])
selection.run(
    snakemake.input.select,
    snakemake.input.checkpoints,
    snakemake.input.metrics,
    snakemake.output[0],
    snakemake.params.spec,
)
