"""A real Ray cluster (`ray start --head` on loopback): the miniature study attaches to it through
profiles/ray, its trials run there, and its tables equal the local run's. A killed Ray worker is
retried; a trial that fails for a real reason fails its job with the trial's error in the log."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import psutil
import pytest
import ray.cloudpickle
from helpers import mini_config
from polars.testing import assert_frame_equal
from workflow_helpers import mini_config_writer, snakemake

from covpipe.distribute import TrialsFailed, run_trials

ROOT = Path(__file__).parents[1]
RAY = Path(sys.executable).parent / "ray"
# Every test here starts or uses a real Ray cluster (starting it waits up to a few minutes).
pytestmark = [pytest.mark.workflow, pytest.mark.timeout(1800)]
# The cluster's workers cannot import this test module: ship its trial functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def ray_cluster():
    """(address, head node id) of a one-node cluster with 2 CPUs, stopped (only it) afterwards."""
    gcs, node_manager, object_manager, agent, agent_grpc, metrics, runtime_env = _free_ports(7)
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [
            str(RAY),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            "--num-cpus=2",
            f"--object-store-memory={128 * 1024**2}",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
            f"--node-manager-port={node_manager}",
            f"--object-manager-port={object_manager}",
            f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={runtime_env}",
            "--disable-usage-stats",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    address = f"127.0.0.1:{gcs}"
    try:
        probe = (
            f"import ray; ray.init(address='{address}', logging_level='ERROR'); "
            "print(ray.get_runtime_context().get_node_id()); ray.shutdown()"
        )
        deadline = time.time() + 180
        while True:
            assert head.poll() is None, f"ray start failed:\n{head.stdout.read()}"
            try:
                got = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
            except subprocess.TimeoutExpired:
                continue
            if got.returncode == 0:
                node_id = got.stdout.split()[-1]
                break
            assert time.time() < deadline, f"Ray head not reachable at {address}:\n{got.stderr[-2000:]}"
            time.sleep(1)
        yield address, node_id
    finally:
        _stop(head, temp)


def _stop(head, temp):
    """Stop this cluster's processes only (never `ray stop`: it would end every Ray on the machine)."""
    ours = [p for p in psutil.process_iter(["cmdline"]) if any(temp in part for part in (p.info["cmdline"] or []))]
    head.send_signal(signal.SIGTERM)  # `ray start --block` then shuts its cluster down
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        head.kill()
    gone, alive = psutil.wait_procs(ours, timeout=20)
    for p in alive:
        p.kill()
    shutil.rmtree(temp, ignore_errors=True)


def _tables(directory):
    """The horizon-4 cells' tables of a finished mini study."""
    results = directory / "results" / "mini"
    out = {
        name: pl.read_parquet(results / f"{name}.parquet").filter(pl.col("horizon") == 4)
        for name in ("metrics", "train_log")
    }
    out["train_log"] = out["train_log"].drop("seconds")
    for path in sorted(results.glob("eval/*/horizon~4/log_ratios.parquet")):
        out[str(path.relative_to(results))] = pl.read_parquet(path)
    return out


def test_the_mini_study_runs_on_an_existing_ray_cluster_with_identical_tables(ray_cluster, finished, tmp_path):
    address, node_id = ray_cluster
    cfg = mini_config(horizons=[4])  # the local run's horizon-4 cells, on the cluster
    cfg["execution"] = {"backend": "serial"}  # profiles/ray overrides it: backend ray, address from RAY_ADDRESS
    mini_config_writer(tmp_path, cfg)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(ROOT / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--workflow-profile",
            str(ROOT / "profiles" / "ray"),
            "--cores",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "RAY_ADDRESS": address},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    logs = [p for stage in ("train", "evaluate") for p in (tmp_path / "logs" / "mini" / stage).rglob("*.log")]
    assert len(logs) == 4  # (tpp, gru) x (train, evaluate)
    # Ray names the cluster by the head's address on the machine's interface: same GCS port.
    cluster = rf"cluster [\d.]+:{address.rsplit(':', 1)[1]}"
    for log in logs:
        text = log.read_text()
        assert re.search(rf"ray: attached to auto in [\d.]+ s, {cluster} \(1 nodes", text), log
        assert re.search(rf"ray: 2 trials ran on node\(s\) {node_id} of {cluster}", text), log
    local = _tables(finished[0])
    ray = _tables(tmp_path)
    assert local.keys() == ray.keys()
    for name in local:
        assert_frame_equal(ray[name], local[name])


def _dies_once(marker):
    """Kill this Ray worker the first time (as the OOM killer or a lost node would), then succeed."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


def test_a_killed_ray_worker_is_retried(ray_cluster, tmp_path):
    address, _ = ray_cluster
    assert run_trials(_dies_once, [(str(tmp_path / "died"),)], backend="ray", address=address) == ["survived"]
    assert (tmp_path / "died").exists()


def test_a_trial_that_fails_fails_its_job_with_the_trial_error_in_the_job_log(ray_cluster, tmp_path):
    address, _ = ray_cluster
    cfg = mini_config(horizons=[2])
    # SGD at lr 1e38 overflows the GRU's weights: the loss is inf at step 2, a real failure.
    cfg["studies"]["mini"]["models"]["gru"]["train"] = {
        "optimizer": "sgd",
        "lr": 1e38,
        "steps": 20,
        "checkpoints": [20],
    }
    cfg["execution"] = {"backend": "ray", "ray_address": address}
    mini_config_writer(tmp_path, cfg)
    target = "results/mini/train/model~gru/horizon~2/checkpoints.pt"
    proc = snakemake(tmp_path, target, check=False)
    assert proc.returncode != 0
    log = (tmp_path / "logs" / "mini" / "train" / "model~gru" / "horizon~2.log").read_text()
    assert "job failed: TrialsFailed: 2 of 2 trials failed" in log
    # inf or nan: which one an overflow gives depends on the order of the sums (vectorized GRU: nan)
    assert re.search(r"gru H=2 seed 0: FloatingPointError: gru horizon 2 seed 0: loss is (inf|nan) at step 2", log)
    assert not (tmp_path / target).exists()


def _raises(x):
    raise ValueError(f"bad trial {x}")


def test_a_raising_trial_on_the_cluster_is_reported_not_retried(ray_cluster):
    address, _ = ray_cluster
    with pytest.raises(TrialsFailed, match=r"1 of 1 trials failed:\nt: ValueError: bad trial 7"):
        run_trials(_raises, [(7,)], backend="ray", address=address, names=["t"])
