"""Item 4: 8 equal trials through the Ray backend (a private local instance on 2 CPUs, started and
shut down by covpipe.distribute, included) against the serial backend (one process, one thread),
and through the run's own instance (execution.ray_address: run; issue 17, item 4): started once per
Snakemake run with warm workers, so a job pays only its attach (included), not the start-up.

A trial is one seed of GRU training (covpipe.train.train_trial, the per-seed trial that Ray fans
out), sized to take about `seconds` on its own. Start-up is timed separately as 8 empty trials
through the same path: start Ray, start the workers, run, shut down.
"""

from __future__ import annotations

import os
import time

from common import Figure, one_thread


def run(quick: bool = False) -> list[Figure]:
    from training import _markov_spec

    from covpipe import train
    from covpipe.distribute import run_trials

    one_thread()
    # Ray workers inherit the environment: silence torch's note on Ray's read-only arrays in their output
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning")
    trial_seconds = 4.0 if quick else 10.0
    probe_steps = 20
    spec, batches = _markov_spec("gru", 64, probe_steps, 1)
    started = time.perf_counter()
    train.train_trial(spec, 0, batches[0])
    per_step = (time.perf_counter() - started) / probe_steps
    steps = max(probe_steps, int(trial_seconds / per_step))
    spec, batches = _markov_spec("gru", 64, steps, 8)
    trials = [(spec, s, b) for s, b in enumerate(batches)]

    started = time.perf_counter()
    run_trials(abs, [(-1,)] * 8, backend="ray", num_cpus=2)
    startup = time.perf_counter() - started
    started = time.perf_counter()
    serial_out = run_trials(train.train_trial, trials, backend="serial")
    serial = time.perf_counter() - started
    started = time.perf_counter()
    ray_out = run_trials(train.train_trial, trials, backend="ray", num_cpus=2)
    ray = time.perf_counter() - started
    same = all(a["log"][-1]["train_loss"] == b["log"][-1]["train_loss"] for a, b in zip(serial_out, ray_out))
    run_s, run_start, run_same = _on_run_instance(train.train_trial, trials, serial_out)
    speedup = serial / ray
    print(
        f"  8 trials of GRU training (markov H = 64, {steps} steps, about {serial / 8:.1f} s each): serial {serial:.1f} s, "
        f"Ray on 2 CPUs {ray:.1f} s; Ray start-up + shutdown alone {startup:.1f} s; identical results: {same}"
    )
    parallel = serial / max(ray - startup, 1e-9)
    print(f"  without start-up: {parallel:.2f}x; the ceiling on 2 cores is 2x")
    if 1.8 < parallel:  # serial / (startup + serial / parallel) >= 1.8 for serial >= 1.8 startup / (1 - 1.8 / parallel)
        print(
            f"  at this efficiency 1.8x including start-up needs trials of at least "
            f"{1.8 * startup / (1 - 1.8 / parallel) / 8:.0f} s each"
        )
    run_speedup = serial / run_s
    print(
        f"  the run's instance (ray_address: run): started once per run in {run_start:.1f} s (workers warm); "
        f"a job's 8 trials {run_s:.1f} s, attach included: {run_speedup:.2f}x; identical results: {run_same}"
    )
    return [
        Figure(
            4,
            "Ray fan-out, 8 trials on 2 cores, vs serial (start-up included)",
            ">= 1.8x",
            f"serial {serial:.1f} s, Ray {ray:.1f} s",
            speedup,
            speedup >= 1.8,
        ),
        Figure(
            4,
            "Ray fan-out on the run's instance (ray_address: run), 8 trials on 2 cores, vs serial (attach included)",
            ">= 1.8x",
            f"serial {serial:.1f} s, run instance {run_s:.1f} s",
            run_speedup,
            run_speedup >= 1.8,
        ),
        Figure(
            4,
            "the run's Ray instance: start with 2 warm workers (once per run), then stop",
            "reported",
            f"{run_start:.1f} s",
            None,
            None,
        ),
        Figure(4, "Ray start-up + shutdown (8 empty trials)", "reported", f"{startup:.1f} s", None, None),
    ]


def _on_run_instance(fn, trials, want):
    """(seconds of one job's trials on the run instance, attach included; seconds to start and stop
    the instance; whether results equal `want`). The instance's record lives in a scratch folder."""
    import tempfile

    from covpipe import distribute
    from covpipe.distribute import run_trials

    with tempfile.TemporaryDirectory(prefix="covpipe-bench-") as tmp:
        saved, distribute.RUN_STATE = distribute.RUN_STATE, os.path.join(tmp, "covpipe-ray.json")
        try:
            started = time.perf_counter()
            distribute.start_run_instance(2)
            start = time.perf_counter() - started
            try:
                started = time.perf_counter()
                out = run_trials(fn, trials, backend="ray", address="run")
                seconds = time.perf_counter() - started
            finally:
                started = time.perf_counter()
                distribute.stop_run_instance()
                start += time.perf_counter() - started
        finally:
            distribute.RUN_STATE = saved
    same = all(a["log"][-1]["train_loss"] == b["log"][-1]["train_loss"] for a, b in zip(want, out))
    return seconds, start, same
