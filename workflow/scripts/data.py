"""Adapter: the data rule -> covpipe.data.run."""

from covpipe import data
from covpipe.cli import setup_logging

setup_logging(snakemake.log[0])
data.run(snakemake.output.train, snakemake.output.eval, snakemake.params.spec)
