"""Nothing computed is lost or corrupted: atomic writes, Snakemake's lock, determinism."""

import signal
import subprocess
import sys
import time

import polars as pl
import pytest
from helpers import mini_config
from polars.testing import assert_frame_equal
from workflow_helpers import SNAKEMAKE, mini_config_writer

from covpipe import data, evaluate, io, specs, train
from covpipe.config import validate_config

WRITER = """
import sys, time, polars as pl
from covpipe import io
df = pl.DataFrame({"x": list(range(1000))})
with io.atomic_path(sys.argv[1]) as tmp:
    df.write_parquet(tmp)
    print("written", flush=True)
    time.sleep(60)  # killed here: the table is complete on disk, but not under its final name
"""


def test_a_killed_writer_leaves_nothing_under_the_final_name(tmp_path):
    target = tmp_path / "table.parquet"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    io.write_parquet(pl.DataFrame({"x": [1]}), target)  # a rerun writes it normally
    assert io.read_parquet(target)["x"].to_list() == [1]


def test_a_failing_block_removes_its_temporary_file(tmp_path):
    with pytest.raises(RuntimeError):
        with io.atomic_path(tmp_path / "f.parquet") as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.workflow
def test_a_second_concurrent_run_stops_at_the_lock_and_the_first_finishes(tmp_path):
    mini_config_writer(tmp_path, mini_config())
    first = subprocess.Popen(
        [*SNAKEMAKE, "--directory", str(tmp_path), "--cores", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lock_dir = tmp_path / ".snakemake" / "locks"
    deadline = time.time() + 120
    while not (lock_dir.exists() and any(lock_dir.iterdir())):
        assert first.poll() is None and time.time() < deadline, "first run never took the lock"
        time.sleep(0.2)
    second = subprocess.run(
        [*SNAKEMAKE, "--directory", str(tmp_path), "--cores", "1"], capture_output=True, text=True, timeout=300
    )
    assert second.returncode != 0
    assert "Directory cannot be locked" in second.stdout + second.stderr
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out[-3000:]
    assert (tmp_path / "results" / "mini" / "metrics.parquet").exists()
    # The finished study is complete: a dry run has nothing to do.
    dry = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "-n"], capture_output=True, text=True)
    assert "Nothing to be done" in dry.stdout


# Large enough that two threads split its work: a matmul of (64 sequences x 64 positions) x 96
# hidden units, and an evaluation batch of 128 sequences (two chunks of 64).
SPLITTABLE = dict(
    teacher={"name": "markov", "vocab_size": 8, "order": 1, "classes": {"a": 0.7, "b": 0.3}},
    data={"n_train": 256, "n_eval": 128},
    models={
        "tpp": {"class": "table_per_position", "order": 1},
        "gru": {"class": "gru", "hidden": 96, "embed": 32, "train": {"steps": 10, "checkpoints": [10]}},
    },
    train={"steps": 10, "batch_size": 64, "lr": 0.05, "checkpoints": [10]},
)


def _tables(tmp, threads):
    cfg = validate_config(mini_config(**SPLITTABLE))
    study = cfg["studies"]["mini"]
    tmp.mkdir()
    horizon = 32
    study["horizons"] = [horizon]
    data.run(tmp / "train.parquet", tmp / "eval.parquet", specs.data_spec("mini", study, horizon))
    out = []
    for model in study["models"]:
        spec = specs.train_spec("mini", study, model, horizon)
        train.run(tmp / "train.parquet", tmp / "c.pt", tmp / "l.parquet", spec, threads=threads, backend="serial")
        evaluate.run(
            tmp / "eval.parquet",
            tmp / "c.pt",
            tmp / "m.parquet",
            tmp / "r.parquet",
            specs.evaluate_spec(spec, study["evaluate"]),
            threads=threads,
            backend="serial",
        )
        out += [
            pl.read_parquet(tmp / "m.parquet"),
            pl.read_parquet(tmp / "r.parquet"),
            pl.read_parquet(tmp / "l.parquet").drop("seconds"),
        ]
    return out


def test_tables_are_bit_identical_across_thread_counts_and_reruns(tmp_path):
    one = _tables(tmp_path / "one", 1)
    again = _tables(tmp_path / "again", 1)
    two = _tables(tmp_path / "two", 2)
    for a, b, c in zip(one, again, two):
        assert_frame_equal(a, b, check_exact=True)
        assert_frame_equal(a, c, check_exact=True)
