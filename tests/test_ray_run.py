"""execution.ray_address: run: one local Ray instance per Snakemake run, started when the run
starts, stopped when it ends or fails, and after a kill at the next run; every job's trials run on
its warm workers."""

import json
import os
import re
import signal
import subprocess
import time

import polars as pl
import psutil
import pytest
from helpers import mini_config
from polars.testing import assert_frame_equal
from workflow_helpers import SNAKEMAKE, mini_config_writer, snakemake

from covpipe import cluster, distribute

pytestmark = pytest.mark.workflow


def _instance_pids(record) -> list[int]:
    return cluster.pids_of(record["pid"], record["temp_dir"])


def test_the_run_instance_serves_every_job_from_the_same_warm_workers_and_stops_clean(tmp_path, monkeypatch):
    state = tmp_path / ".snakemake" / "covpipe-ray.json"
    monkeypatch.setattr(distribute, "RUN_STATE", str(state))
    distribute.start_run_instance(2)
    first = json.loads(state.read_text())
    try:
        assert _instance_pids(first)
        # Two jobs (two drivers, one after the other) reach the same two worker processes.
        job1 = distribute.run_trials(os.getpid, [()] * 4, backend="ray", address="run")
        job2 = distribute.run_trials(os.getpid, [()] * 4, backend="ray", address="run")
        assert set(job1) == set(job2) and len(set(job1)) == 2 and os.getpid() not in job1
        assert distribute.run_trials(abs, [(-i,) for i in range(6)], backend="ray", address="run") == list(range(6))
        assert distribute.resolve_backend("auto", 1, 4, "run") == "ray"

        # A run that finds an instance left behind (its run was killed) stops it before starting its own.
        distribute.start_run_instance(2)
        second = json.loads(state.read_text())
        assert second["address"] != first["address"] and not _instance_pids(first)
        assert not os.path.exists(first["temp_dir"])
    finally:
        assert distribute.stop_run_instance()
    assert not state.exists() and not _instance_pids(second)
    assert distribute.resolve_backend("auto", 1, 4, "run") == "serial"  # no instance: no Ray start-up per job


def _config():
    cfg = mini_config()
    cfg["execution"] = {"backend": "auto", "ray_address": "run"}
    return cfg


def _tables(directory):
    results = directory / "results" / "mini"
    return (
        pl.read_parquet(results / "metrics.parquet"),
        pl.read_parquet(results / "train_log.parquet").drop("seconds"),
    )


def _attached(directory) -> set[str]:
    """Addresses of run instances the evaluate jobs' logs say they attached to."""
    text = "".join(p.read_text() for p in (directory / "logs" / "mini" / "evaluate").rglob("*.log"))
    return set(re.findall(r"attached to the run's instance (\S+)", text))


def test_a_run_on_its_own_ray_instance_gives_the_serial_tables_and_a_killed_runs_instance_is_stopped(
    finished, tmp_path
):
    want = _tables(finished[0])
    state = tmp_path / ".snakemake" / "covpipe-ray.json"

    mini_config_writer(tmp_path, _config())
    proc = subprocess.Popen(
        [*SNAKEMAKE, "--directory", str(tmp_path), "--cores", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not state.exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its Ray instance started"
        time.sleep(0.05)
    time.sleep(1)  # the record is written before the instance answers: let it come up
    left = json.loads(state.read_text())
    # SIGKILL Snakemake and its jobs (not the instance: a kill of the run leaves it behind, as here).
    parent = psutil.Process(proc.pid)
    for p in [parent, *parent.children(recursive=True)]:
        try:
            if os.getsid(p.pid) != left["pid"]:
                p.send_signal(signal.SIGKILL)
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
    proc.wait()
    assert state.exists() and _instance_pids(left), "the killed run's instance should still be running"

    snakemake(tmp_path, "--unlock")
    snakemake(tmp_path, "--rerun-incomplete")
    assert not _instance_pids(left), "the next run did not stop the instance the killed run left"
    assert not state.exists(), "the run's instance was not stopped when the run ended"
    addresses = _attached(tmp_path)
    assert len(addresses) == 1 and left["address"] not in addresses  # every evaluate job on this run's instance
    with pytest.raises(ValueError, match="no Ray cluster answers"):
        distribute.check_address(addresses.pop(), timeout=1)
    for got, expected in zip(_tables(tmp_path), want):
        assert_frame_equal(got, expected)
