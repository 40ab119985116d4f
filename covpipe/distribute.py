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
import re
import time
import traceback
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

OBJECT_STORE_BYTES = 256 * 1024**2  # Ray's default is 30% of RAM per instance
MAX_RETRIES = 2  # reruns of a trial whose Ray worker died


class TrialsFailed(RuntimeError):
    """Some trials raised; the message lists each one with its error."""


ADDRESS = re.compile(r"(?:ray://)?(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
                     r":(?P<port>[0-9]{1,5})")
CONNECT_SECONDS = 3.0


def check_address(address: str, timeout: float = CONNECT_SECONDS) -> None:
    """Raise ValueError (one line) unless `address` is 'local', or names a Ray cluster that
    accepts a connection within `timeout` seconds: 'host:port', 'ray://host:port', or 'auto'
    (RAY_ADDRESS, else the cluster `ray start` left on this machine). Never imports ray."""
    import socket

    if address == "local":
        return
    shown = address
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or _current_cluster()
        if not address:
            raise ValueError("'auto' but RAY_ADDRESS is unset and no Ray cluster runs on this machine "
                             "(start one with `ray start --head`, or use 'local')")
        shown = f"'auto' (= {address[:80]})"
        if address == "local":
            return
    match = ADDRESS.fullmatch(address)
    if not match or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"{shown[:80]!r}: expected 'local', 'auto' or host:port of a Ray cluster (e.g. 10.0.0.1:6379)")
    deadline = time.monotonic() + timeout
    try:
        conn = socket.create_connection((match["host"].strip("[]"), int(match["port"])), timeout=timeout)
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise ValueError(f"{shown}: no Ray cluster answers there ({reason} within {timeout:g} s); "
                         "start it, or use 'local'") from None
    head = b""
    with conn:
        # Ray's GCS (and its client server) speak gRPC: an HTTP/2 server answers the client
        # preface with a SETTINGS frame. A port that merely accepts connections does not.
        try:
            conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
            while len(head) < 9:
                conn.settimeout(max(deadline - time.monotonic(), 0.01))
                chunk = conn.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
        except OSError:
            pass
    if len(head) < 9 or head[3] != 4:
        raise ValueError(f"{shown}: something listens there but it is not a Ray cluster (no gRPC answer within "
                         f"{timeout:g} s); check the port, or use 'local'")


def _current_cluster() -> str | None:
    """The address `ray start --head` records on this machine, if a cluster was started here."""
    try:
        with open(os.path.join(os.environ.get("RAY_TMPDIR", "/tmp"), "ray", "ray_current_cluster")) as f:
            return f.read(200).strip() or None
    except OSError:
        return None


def resolve_backend(backend: str, threads: int, n_trials: int, address: str = "local") -> str:
    """'auto' uses Ray where it can pay: an existing cluster, or a job with more than one
    thread and more than one trial (a private instance costs about 5 s to start)."""
    if backend != "auto":
        return backend
    if address != "local":
        return "ray"
    return "ray" if threads > 1 and n_trials > 1 else "serial"


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
    if address == "local":
        # A private instance sized to this job; never attach to RAY_ADDRESS by accident.
        os.environ.pop("RAY_ADDRESS", None)
        ray.init(address="local", num_cpus=num_cpus, object_store_memory=OBJECT_STORE_BYTES, **init_kwargs)
    else:
        ray.init(address=address, **init_kwargs)
    try:
        context = ray.get_runtime_context()
        log.info("ray: %s in %.1f s, cluster %s (%d nodes, %s CPUs)",
                 "started" if address == "local" else f"attached to {address}", time.perf_counter() - started,
                 context.gcs_address, sum(n["Alive"] for n in ray.nodes()), ray.cluster_resources().get("CPU"))
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
        log.info("ray: %d trials ran on node(s) %s of cluster %s", len(trials), ", ".join(sorted(nodes)),
                 context.gcs_address)
        return outcomes
    finally:
        ray.shutdown()
