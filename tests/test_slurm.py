"""A real single-node SLURM cluster (scripts/slurm-up.sh: munge, slurmctld, slurmd, slurmdbd with
MariaDB) runs the miniature study through profiles/slurm and the snakemake slurm executor."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import polars as pl
import pytest
import torch
from helpers import mini_config
from polars.testing import assert_frame_equal
from workflow_helpers import SNAKEMAKE, mini_config_writer

ROOT = Path(__file__).parents[1]
SCRIPTS = ROOT / "scripts"
# Installing and starting the SLURM daemons may take up to 20 minutes on a fresh machine.
pytestmark = [pytest.mark.workflow, pytest.mark.timeout(2400)]


def _why_no_slurm():
    """Why this machine cannot have a SLURM cluster for the test, or None when it can."""
    if os.geteuid() != 0:
        return "scripts/slurm-up.sh needs root to install and start the SLURM daemons"
    if not shutil.which("apt-get") and not shutil.which("slurmctld"):
        return "SLURM is not installed and there is no apt-get to install it (Debian packages)"
    return None


@pytest.fixture(scope="module")
def slurm_plugin(request):
    """A folder holding the snakemake slurm executor plugin (pyproject's `slurm` extra), for
    PYTHONPATH. Not installed in the test environment: where SLURM's client is installed and no
    controller runs, the plugin makes every Snakemake start wait 9 s for `scontrol show config`."""
    folder = request.config.cache.mkdir("slurm-plugin")
    if not (folder / "snakemake_executor_plugin_slurm").is_dir():
        wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["slurm"]
        # Its other needs (pandas, throttler, the executor interfaces) come with covpipe and Snakemake;
        # --no-deps keeps a second numpy or pandas out of the folder, which would shadow the venv's.
        pip = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(folder),
                *wanted,
                "snakemake-executor-plugin-slurm-jobstep>=0.6,<1",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert pip.returncode == 0, f"installing the slurm plugin failed:\n{pip.stdout}\n{pip.stderr}"
    return folder


@pytest.fixture(scope="module")
def slurm_cluster(slurm_plugin):
    if reason := _why_no_slurm():
        pytest.skip(reason)
    holder = str(os.getpid())  # other checkouts' test runs on this machine may share the cluster
    up = subprocess.run(
        ["bash", str(SCRIPTS / "slurm-up.sh"), "--hold", holder], capture_output=True, text=True, timeout=1200
    )
    assert up.returncode == 0, f"slurm-up.sh failed:\n{up.stdout}\n{up.stderr}"
    yield slurm_plugin
    subprocess.run(["bash", str(SCRIPTS / "slurm-down.sh"), "--release", holder], capture_output=True, timeout=120)


def _submit(directory, plugin, *args):
    """The README's submit command; threads fit the 2-CPU test node, status polls start after 1 s.
    `plugin`: the folder of the slurm executor plugin, put on PYTHONPATH (exported into the jobs too)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(plugin), os.environ.get("PYTHONPATH")]))}
    cmd = [
        *SNAKEMAKE,
        "--directory",
        str(directory),
        "--workflow-profile",
        str(ROOT / "profiles" / "slurm"),
        "--set-threads",
        "train=1",
        "evaluate=1",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--slurm-keep-successful-logs",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env)


def test_the_mini_study_runs_as_slurm_jobs_and_a_second_run_has_nothing_to_do(slurm_cluster, finished, tmp_path):
    mini_config_writer(tmp_path, mini_config(horizons=[4]))
    run = _submit(tmp_path, slurm_cluster)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]

    results = tmp_path / "results" / "mini"
    for table in ["metrics.parquet", "train_log.parquet"] + [
        f"{stage}/model~{m}/horizon~4/{name}"
        for m in ("tpp", "gru")
        for stage, name in [
            ("train", "checkpoints.pt"),
            ("train", "train_log.parquet"),
            ("eval", "metrics.parquet"),
            ("eval", "log_ratios.parquet"),
        ]
    ]:
        assert (results / table).stat().st_size > 0, table
    for name in ["kl_vs_horizon", "coverage_vs_horizon", "coverage_profile", "training_curves"]:
        assert (results / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Every job was a SLURM job: data 1, train 2, evaluate 2, aggregate 1, plot 4 (rule all is local).
    ids = re.findall(r"submitted with SLURM jobid (\d+)", out)
    assert len(ids) == 10, out[-6000:]
    acct = subprocess.run(
        ["sacct", "-X", "--parsable2", "--noheader", "--format=JobIdRaw,State", "--jobs", ",".join(ids)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    states = dict(line.split("|") for line in acct.split())
    assert states == {i: "COMPLETED" for i in ids}, acct
    # ... and each rule's own log says which SLURM job it ran in.
    logs = list((tmp_path / "logs").rglob("*.log"))
    assert len(logs) == 10
    for log in logs:
        match = re.search(r"SLURM job (\d+) on node", log.read_text())
        assert match and match.group(1) in ids, log

    # Same tables as the local run of the same cells.
    local = finished[0] / "results" / "mini"
    for name, drop in [("metrics.parquet", []), ("train_log.parquet", ["seconds"])]:
        want = pl.read_parquet(local / name).filter(pl.col("horizon") == 4).drop(drop)
        assert_frame_equal(pl.read_parquet(results / name).drop(drop), want)

    again = _submit(tmp_path, slurm_cluster)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Nothing to be done" in again.stdout + again.stderr
    assert "submitted with SLURM jobid" not in again.stdout + again.stderr


@pytest.mark.skipif(
    torch.cuda.is_available(),
    reason="torch sees a GPU on this host, so the test node has one: "
    "the job would find it instead of stopping with the no-GPU error this test checks",
)
def test_a_gpu_study_is_submitted_from_a_login_node_without_gpu_and_its_job_says_no_gpu(slurm_cluster, tmp_path):
    """`execution.device: cuda` is checked where the jobs run: the login node (no GPU here) submits,
    the job on a node without GPU stops with the config error in its SLURM log."""
    cfg = mini_config(horizons=[4])
    cfg["execution"] = {"device": "cuda"}
    mini_config_writer(tmp_path, cfg)
    run = _submit(tmp_path, slurm_cluster, "results/mini/data/horizon~4/train.parquet", "--retries", "0")
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert re.search(r"submitted with SLURM jobid (\d+)", out), out[-3000:]
    job_logs = list((tmp_path / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert any("'cuda' requested but torch sees no GPU" in p.read_text() for p in job_logs), out[-3000:]
