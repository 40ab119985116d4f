"""Adapter: the aggregate_selection rule -> covpipe.aggregate.concat."""

from covpipe import aggregate
from covpipe.cli import setup_logging

setup_logging(snakemake.log[0])
aggregate.concat(snakemake.input, snakemake.output[0], ["model", "horizon", "seed", "n", "rule"])
