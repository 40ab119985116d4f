"""Fan-out of independent trials: the only module that imports Ray.

`run_trials(fn, trials)` calls fn(*trial) for each trial and returns the results in trial
order, on one of three backends: in-process ("serial"), a private local Ray instance
(address "local"), or an existing Ray cluster (address "host:port", or "auto": RAY_ADDRESS or the
cluster running on this machine). The same fn
gives the same results everywhere: each trial seeds itself from its own spec and runs with
one torch thread under Ray (a fixed thread count keeps float reductions identical).
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .cluster import alive, check_address, free_port, pids_of

log = logging.getLogger(__name__)

OBJECT_STORE_BYTES = 256 * 1024**2  # Ray's default is 30% of RAM per instance
MAX_RETRIES = 2  # reruns of a trial whose Ray worker died


class TrialsFailed(RuntimeError):
    """Some trials raised; the message lists each one with its error."""


def resolve_backend(backend: str, threads: int, n_trials: int, address: str = "local") -> str:
    """'auto' uses Ray where it can pay: an existing cluster, the run's own instance (address
    'run') for a job of more than one trial, or a job with more than one thread and more than one
    trial (a private instance costs about 5 s to start)."""
    if backend != "auto":
        return backend
    if address == "run":
        return "ray" if n_trials > 1 and run_address() is not None else "serial"
    if address != "local":
        return "ray"
    return "ray" if threads > 1 and n_trials > 1 else "serial"


@dataclass(frozen=True)
class Execution:
    """How a stage job runs its trials: the rule's `threads` and the config's execution settings
    (`backend` auto, serial or ray; Ray `address`; torch `device`)."""

    threads: int = 1
    backend: str = "auto"
    address: str = "local"
    device: str = "cpu"

    def resolved(self, n_trials: int) -> Execution:
        """These settings with the backend resolve_backend picks for `n_trials` trials; a serial
        job's torch then uses `threads` threads."""
        backend = resolve_backend(self.backend, self.threads, n_trials, self.address)
        if backend == "serial":
            import torch  # here: planning imports this module and never loads torch

            torch.set_num_threads(self.threads)
        return replace(self, backend=backend)

    def run(self, fn: Callable[..., Any], trials: Sequence[tuple], names: Sequence[str]) -> list:
        """run_trials on these settings: a trial on a GPU device asks for a whole GPU."""
        return run_trials(
            fn,
            trials,
            backend=self.backend,
            address=self.address,
            num_cpus=self.threads,
            num_gpus=1 if self.device != "cpu" else 0,
            names=names,
        )

    def run_seeds(self, fn: Callable[..., Any], trials: Sequence[tuple], spec: dict, seeds: Sequence[int]) -> list:
        """`run` of one trial per seed of a (study, model, horizon) job, named as the logs name them."""
        return self.run(fn, trials, [seeds_name(spec, [s]) for s in seeds])


def seeds_name(spec: dict, seeds: Sequence[int]) -> str:
    """How logs and failures name seeds of a job: 'gru H=4 seed 1', or 'gru H=4 seeds 0-2'."""
    which = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
    return f"{spec['model_name']} H={spec['horizon']} {which}"


# ---- one local Ray instance per Snakemake run (execution.ray_address: run) ----------------------

RUN_STATE = os.path.join(".snakemake", "covpipe-ray.json")  # relative to the run's working directory
RUN_START_SECONDS = 120.0


def start_run_instance(num_cpus: int, state: str | None = None) -> str:
    """Start the run's local Ray instance (`ray start --head --block` in a session of its own) and
    record it in `state`; return its address. An instance a killed run left behind is stopped first.
    Jobs of the run attach to it (address 'run'), so its start-up is paid once per run."""
    import json
    import subprocess
    import sys
    import tempfile

    state = state or RUN_STATE
    stop_run_instance(state)
    temp_dir = tempfile.mkdtemp(prefix="covpipe-ray-")  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    address = f"127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--block",
        f"--port={port}",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        # the fixed default (52365) would collide with another instance on this machine
        f"--dashboard-agent-listen-port={free_port()}",
        "--node-ip-address=127.0.0.1",
    ]
    os.makedirs(os.path.dirname(state) or ".", exist_ok=True)
    with open(os.path.join(temp_dir, "start.log"), "wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
        )
    with open(state, "w") as f:
        json.dump({"pid": proc.pid, "address": address, "temp_dir": temp_dir, "workers": num_cpus}, f)
    deadline = time.monotonic() + RUN_START_SECONDS
    while True:
        try:
            check_address(address, timeout=1.0)
            # The warm workers, one per CPU, in a short-lived driver of their own (never Snakemake's process).
            warm = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    f"from covpipe.distribute import _start_workers; _start_workers({address!r}, {num_cpus})",
                ],
                capture_output=True,
                text=True,
                timeout=max(deadline - time.monotonic(), 10),
            )
            if warm.returncode != 0:
                stop_run_instance(state)
                raise RuntimeError(f"the run's Ray workers did not start:\n{warm.stderr[-1500:]}")
            return address
        except ValueError:
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(temp_dir, "start.log"), errors="replace") as f:
                    tail = f.read()[-1500:]
                stop_run_instance(state)
                raise RuntimeError(
                    f"the run's Ray instance did not start ({'exited' if proc.poll() is not None else 'no answer'}"
                    f" within {RUN_START_SECONDS:g} s):\n{tail}"
                ) from None
            time.sleep(0.5)


NAMESPACE = "covpipe-run"  # the run instance's named workers live here


def _worker_class():
    import ray

    class TrialWorker:
        """A warm worker of the run's instance: it keeps torch and covpipe imported between the
        trials of every job of the run (Ray's own workers belong to one driver, one job)."""

        def ready(self):
            import importlib

            for name in ("covpipe.evaluate", "covpipe.train"):  # what trials import: torch, the models
                importlib.import_module(name)  # by name: preloading is not a code dependency (covpipe.fingerprint)
            return os.getpid()

        def run(self, fn, trial, threads):
            return _traced(fn, trial, threads)

    return ray.remote(num_cpus=1, max_restarts=MAX_RETRIES, max_task_retries=MAX_RETRIES)(TrialWorker)


def _start_workers(address: str, n: int) -> None:
    """Start the run instance's `n` detached, named workers and wait until each has imported torch."""
    import ray

    ray.init(
        address=address, namespace=NAMESPACE, include_dashboard=False, configure_logging=False, log_to_driver=False
    )
    try:
        cls = _worker_class()
        workers = [cls.options(name=f"worker-{i}", lifetime="detached").remote() for i in range(n)]
        ray.get([w.ready.remote() for w in workers])
    finally:
        ray.shutdown()


def _run_state(state: str | None = None) -> dict | None:
    """What start_run_instance recorded in `state` (default RUN_STATE, read at call time), or None."""
    import json

    try:
        with open(state or RUN_STATE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_address(state: str | None = None) -> str | None:
    """The address of the run's Ray instance recorded in `state` (default RUN_STATE), or None."""
    return (_run_state(state) or {}).get("address")


def stop_run_instance(state: str | None = None) -> bool:
    """Stop the instance recorded in `state` (its session's processes, and any process of its
    temporary folder, Ray's workers included) and forget it. Other Ray instances on the machine
    are left alone. Returns whether there was one to stop."""
    import shutil
    import signal

    state = state or RUN_STATE
    rec = _run_state(state)
    if rec is None:
        return False
    marker = rec.get("temp_dir") or ""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = pids_of(rec.get("pid"), marker)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if alive(p)]
            time.sleep(0.2)
    try:
        os.remove(state)
    except OSError:
        pass
    if os.path.basename(marker).startswith("covpipe-ray-"):  # only a folder start_run_instance made
        shutil.rmtree(marker, ignore_errors=True)
    return True


def run_trials(
    fn: Callable[..., Any],
    trials: Sequence[tuple],
    *,
    backend: str = "serial",
    address: str = "local",
    num_cpus: int = 1,
    num_gpus: int = 0,
    names: Sequence[str] | None = None,
) -> list:
    """Run fn(*trial) for every trial; results in trial order.

    A failing trial does not stop its siblings: all run, then TrialsFailed lists the failures.
    """
    names = list(names) if names is not None else [f"trial {i}" for i in range(len(trials))]
    if backend == "serial":
        return _collect([_guarded(fn, t) for t in trials], names)
    if backend == "ray":
        return _collect(_run_ray(fn, trials, address, num_cpus, num_gpus), names)
    raise ValueError(f"backend: unknown '{backend}'; known: auto, ray, serial")


def _guarded(fn, trial, threads: int | None = None):
    """(ok, value or formatted error) for one call."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        return True, fn(*trial)
    except Exception:
        return False, traceback.format_exc(limit=8)


def _traced(fn, trial, threads):
    """_guarded plus the Ray node the trial ran on (the job log names the cluster's nodes)."""
    import ray

    return _guarded(fn, trial, threads), ray.get_runtime_context().get_node_id()


def collect(outcomes, names):
    """Values of (ok, value or error text) outcomes in order; TrialsFailed lists every failure.
    For callers that run several trials inside one task (covpipe.vectorized)."""
    return _collect(outcomes, names)


def _collect(outcomes, names):
    failures = [f"{name}: {err.strip().splitlines()[-1]}\n{err}" for name, (ok, err) in zip(names, outcomes) if not ok]
    if failures:
        raise TrialsFailed(f"{len(failures)} of {len(outcomes)} trials failed:\n" + "\n".join(failures))
    return [value for _, value in outcomes]


def _run_ray(fn, trials, address, num_cpus, num_gpus=0):
    import ray

    started = time.perf_counter()
    init_kwargs = dict(include_dashboard=False, log_to_driver=True, configure_logging=False)
    if address == "run":
        run = _run_state()
        if run is not None and not num_gpus:
            return _run_on_run_instance(fn, trials, run)
        # a job run by hand (no run instance recorded), or GPU trials (the run instance has no GPUs)
        log.info(
            "ray: %s; starting a private instance", "GPU trials" if num_gpus else f"no run instance in {RUN_STATE}"
        )
        address = "local"
    if address == "local":
        # A private instance sized to this job; never attach to RAY_ADDRESS by accident.
        os.environ.pop("RAY_ADDRESS", None)
        ray.init(address="local", num_cpus=num_cpus, object_store_memory=OBJECT_STORE_BYTES, **init_kwargs)
    else:
        ray.init(address=address, **init_kwargs)
    try:
        context = ray.get_runtime_context()
        log.info(
            "ray: %s in %.1f s, cluster %s (%d nodes, %s CPUs)",
            "started" if address == "local" else f"attached to {address}",
            time.perf_counter() - started,
            context.gcs_address,
            sum(n["Alive"] for n in ray.nodes()),
            ray.cluster_resources().get("CPU"),
        )
        # A GPU trial asks Ray for a whole GPU, so trials never share one. A worker that dies
        # (killed, node lost) is retried up to MAX_RETRIES times; fn raising is not retried.
        remote = ray.remote(num_cpus=1, num_gpus=num_gpus, max_retries=MAX_RETRIES, retry_exceptions=False)(_traced)
        fn_ref = ray.put(fn)
        refs = [remote.remote(fn_ref, trial, 1) for trial in trials]
        outcomes, nodes = [], set()
        for ref in refs:
            try:
                outcome, node = ray.get(ref)
                outcomes.append(outcome)
                nodes.add(node)
            except Exception as exc:  # the worker died (retries exhausted), not fn raising
                outcomes.append((False, f"{type(exc).__name__}: {exc}"))
        log.info(
            "ray: %d trials ran on node(s) %s of cluster %s", len(trials), ", ".join(sorted(nodes)), context.gcs_address
        )
        return outcomes
    finally:
        ray.shutdown()


def _run_on_run_instance(fn, trials, run: dict):
    """The trials on the warm workers of the run's instance: trial i goes to worker (i + o) mod n,
    o varying by job so that concurrent jobs spread over the workers."""
    import ray

    started = time.perf_counter()
    ray.init(
        address=run["address"],
        namespace=NAMESPACE,
        include_dashboard=False,
        log_to_driver=True,
        configure_logging=False,
    )
    try:
        workers = [ray.get_actor(f"worker-{i}") for i in range(run["workers"])]
        log.info(
            "ray: attached to the run's instance %s in %.1f s (%d warm workers)",
            run["address"],
            time.perf_counter() - started,
            len(workers),
        )
        offset = os.getpid()
        refs = [workers[(i + offset) % len(workers)].run.remote(fn, trial, 1) for i, trial in enumerate(trials)]
        outcomes = []
        for ref in refs:
            try:
                outcomes.append(ray.get(ref)[0])
            except Exception as exc:  # the worker died (restarts exhausted), not fn raising
                outcomes.append((False, f"{type(exc).__name__}: {exc}"))
        return outcomes
    finally:
        ray.shutdown()
