"""Resume after a crash: a training job killed mid-run (SIGKILL to Snakemake's whole process
tree) and rerun continues from its last saved state and ends bit-identical to a run that was
never interrupted."""

import re
import signal
import subprocess
import time

import polars as pl
import psutil
import pytest
import torch
from helpers import mini_config
from polars.testing import assert_frame_equal
from workflow_helpers import SNAKEMAKE, mini_config_writer, snakemake

from covpipe import data, resume, specs, train
from covpipe.config import validate_config

STEPS = 1200  # about 3 s per seed here: time enough to kill seed 1 between its first two checkpoints
TARGETS = ["results/mini/metrics.parquet", "results/mini/train_log.parquet"]


def _config():
    cfg = mini_config(horizons=[4])
    cfg["studies"]["mini"]["models"] = {
        "gru": {
            "class": "gru",
            "hidden": 4,
            "embed": 3,
            "train": {"steps": STEPS, "checkpoints": [50, STEPS // 2, STEPS]},
        },
    }
    return cfg


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL Snakemake and every process below it, as an out-of-memory killer or a lost node would."""
    parent = psutil.Process(proc.pid)
    for p in [parent, *parent.children(recursive=True)]:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def _tables(directory):
    results = directory / "results" / "mini"
    cell = "model~gru/horizon~4"
    ckpt = torch.load(results / "train" / cell / "checkpoints.pt", weights_only=True)
    return {
        "metrics": pl.read_parquet(results / "metrics.parquet"),
        "train_log": pl.read_parquet(results / "train_log.parquet").drop("seconds"),
        "log_ratios": pl.read_parquet(results / "eval" / cell / "log_ratios.parquet"),
    }, ckpt["trials"]


@pytest.mark.workflow
def test_a_killed_training_job_resumes_and_ends_identical_to_an_uninterrupted_run(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    for d in (reference, killed):
        mini_config_writer(d, _config())
    snakemake(reference, *TARGETS)

    states = killed / "results" / "mini" / "train" / "model~gru" / "horizon~4" / "checkpoints.pt.resume"
    proc = subprocess.Popen(
        [*SNAKEMAKE, "--directory", str(killed), "--cores", "2", *TARGETS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    # Seed 0 has finished and seed 1 has saved its first state (step 50): kill mid-seed-1.
    while not (states / "seed~1.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before a resumable state existed"
        time.sleep(0.02)
    _kill_tree(proc)
    assert not (states.parent / "checkpoints.pt").exists(), "the job finished before the kill; raise STEPS"
    seed1 = torch.load(states / "seed~1.pt", weights_only=True)
    assert 50 <= seed1["step"] < STEPS

    snakemake(killed, "--unlock")
    snakemake(killed, "--rerun-incomplete", *TARGETS)
    log = (killed / "logs" / "mini" / "train" / "model~gru" / "horizon~4.log").read_text()
    # seed 0 had finished when seeds train one after another; trained vectorized (covpipe.vectorized,
    # the default for gru) both seeds' states are saved at the same steps
    assert re.search(rf"gru H=4 seed 0: resumed at step ({STEPS}|{seed1['step']})/{STEPS}", log)
    assert f"gru H=4 seed 1: resumed at step {seed1['step']}/{STEPS}" in log
    assert not states.exists()  # removed once the job's outputs were written

    want, want_ckpt = _tables(reference)
    got, got_ckpt = _tables(killed)
    for name in want:
        assert_frame_equal(got[name], want[name])
    for seed in want_ckpt:
        for step in want_ckpt[seed]:
            for key, value in want_ckpt[seed][step].items():
                assert torch.equal(got_ckpt[seed][step][key], value), (seed, step, key)


def _cell(tmp_path):
    cfg = validate_config(_config())
    study = cfg["studies"]["mini"]
    data.run(tmp_path / "train.parquet", tmp_path / "eval.parquet", specs.data_spec("mini", study, 4))
    spec = specs.train_spec("mini", study, "gru", 4)
    spec["train"] = {**spec["train"], "steps": 40, "checkpoints": [20, 40]}
    from covpipe import io

    return spec, io.frame_to_batch(io.read_parquet(tmp_path / "train.parquet").filter(pl.col("seed") == 0))


def test_a_state_of_other_settings_or_a_damaged_one_is_ignored(tmp_path):
    spec, batch = _cell(tmp_path)
    fresh = train.train_trial(spec, 0, batch)
    states = tmp_path / "states"
    train.train_trial(spec, 0, batch, resume_dir=states)
    assert torch.load(resume.trial_path(states, 0), weights_only=True)["step"] == 40

    other = {**spec, "train": {**spec["train"], "lr": spec["train"]["lr"] / 2}}
    assert resume.load(resume.trial_path(states, 0), spec=other, seed=0) is None
    assert resume.load(resume.trial_path(states, 0), spec=spec, seed=1) is None
    halved = train.train_trial(other, 0, batch, resume_dir=states)  # trains from step 0, not from spec's state
    assert [r["step"] for r in halved["log"]] == [20, 40]
    assert not torch.equal(halved["checkpoints"][40]["rnn.weight_hh_l0"], fresh["checkpoints"][40]["rnn.weight_hh_l0"])

    resume.trial_path(states, 0).write_bytes(b"not a torch file")
    again = train.train_trial(spec, 0, batch, resume_dir=states)
    for key, value in fresh["checkpoints"][40].items():
        assert torch.equal(again["checkpoints"][40][key], value)


def test_a_resumed_trial_matches_an_uninterrupted_one_from_every_saved_step(tmp_path, caplog):
    """In process: a state saved at step 20 (a checkpoint) continues to the same step-40 result."""
    spec, batch = _cell(tmp_path)
    fresh = train.train_trial(spec, 0, batch)
    states = tmp_path / "states"
    short = {**spec, "train": {**spec["train"], "steps": 20, "checkpoints": [20]}}
    train.train_trial(short, 0, batch, resume_dir=states)
    state = torch.load(resume.trial_path(states, 0), weights_only=True)
    state["spec"] = spec  # the state of `spec` after 20 of its 40 steps (same batches, same optimizer)
    torch.save(state, resume.trial_path(states, 0))
    with caplog.at_level("INFO"):
        resumed = train.train_trial(spec, 0, batch, resume_dir=states)
    assert "gru H=4 seed 0: resumed at step 20/40" in caplog.text
    assert [r["step"] for r in resumed["log"]] == [20, 40]
    assert [r["train_loss"] for r in resumed["log"]] == [r["train_loss"] for r in fresh["log"]]
    for step in (20, 40):
        for key, value in fresh["checkpoints"][step].items():
            assert torch.equal(resumed["checkpoints"][step][key], value)


def test_a_resumed_finetuning_trial_matches_an_uninterrupted_one(tmp_path, caplog):
    """Fine-tuning resumes too: its online samples come from a numpy RNG, saved with the state."""
    from test_selection import FIG1

    from covpipe import finetune, training
    from covpipe.models import Vocab, build_model
    from covpipe.teachers import build_teacher

    spec = specs.finetune_spec("f1", validate_config(FIG1)["studies"]["f1"], "transformer", 4)
    teacher = build_teacher(spec["teacher"])
    start = training.cpu_state(build_model(spec["model"], Vocab.of(teacher, 4), teacher=teacher))  # any start will do
    fresh = finetune.finetune_trial(spec, 0, start)
    states = tmp_path / "states"
    short = {**spec, "train": {**spec["train"], "steps": 2, "checkpoints": [2]}}
    finetune.finetune_trial(short, 0, start, resume_dir=states)
    state = torch.load(resume.trial_path(states, 0), weights_only=True)
    state["spec"] = spec  # the state of `spec` after 2 of its 6 steps
    torch.save(state, resume.trial_path(states, 0))
    with caplog.at_level("INFO"):
        resumed = finetune.finetune_trial(spec, 0, start, resume_dir=states)
    assert "transformer H=4 seed 0: fine-tuning resumed at step 2/6" in caplog.text
    assert [r["step"] for r in resumed["log"]] == [0, 2, 4, 6]
    assert [r["train_loss"] for r in resumed["log"][1:]] == [r["train_loss"] for r in fresh["log"][1:]]
    for step in (2, 4, 6):
        for key, value in fresh["checkpoints"][step].items():
            assert torch.equal(resumed["checkpoints"][step][key], value), (step, key)
