"""Adapter: the plots rule -> covpipe.plots.run."""

from covpipe import plots
from covpipe.cli import setup_logging

setup_logging(snakemake.log[0])
plots.run(
    snakemake.input.metrics,
    [snakemake.output[0]],
    snakemake.params.spec,
    selection_path=snakemake.input.selection[0] if snakemake.input.selection else None,
)
