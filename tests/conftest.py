import os

# Tests measure numbers, not thread scheduling: one thread keeps them fast and reproducible.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pytest


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """A miniature study run to completion with --cores 2: (directory, its first dry-run plan)."""
    from helpers import mini_config
    from workflow_helpers import mini_config_writer, planned_jobs, snakemake

    directory = tmp_path_factory.mktemp("mini")
    mini_config_writer(directory, mini_config())
    plan = planned_jobs(directory)
    snakemake(directory)
    return directory, plan
