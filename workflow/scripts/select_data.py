"""Adapter: the select_data rule -> covpipe.data.run_select."""

from covpipe import data
from covpipe.cli import setup_logging

setup_logging(snakemake.log[0])
data.run_select(snakemake.output[0], snakemake.params.spec)
