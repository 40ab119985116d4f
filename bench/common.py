"""What every benchmark shares: the figure record, the machine line, timers, the default config."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Figure:
    """One printed figure: what, the target, what was measured, and the ratio the target is about."""

    # the item number: 1-8; 9: the graph sampler of issue 13; 10: batched learners, issue 16; 11-14: issue 17
    item: int
    name: str
    target: str
    measured: str
    ratio: float | None = None  # the number the target bounds, when it is a ratio or a budget
    met: bool | None = None  # None: no target to meet (reported only)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        verdict = {True: "met", False: "MISSED", None: "-"}[self.met]
        ratio = "" if self.ratio is None else f"  ratio {self.ratio:.3g}"
        return f"[{self.item}] {self.name}: {self.measured}{ratio}  (target: {self.target}; {verdict})"


def machine() -> str:
    """CPU model, cores, torch version and the load average when asked (others' load disturbs timings)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, load {load:.1f}"


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def best_time(fn, repeats: int = 3) -> float:
    """Shortest wall time of `repeats` calls, seconds: the least disturbed by other processes."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def interleaved(fns: dict, repeats: int = 3) -> dict:
    """Best wall time of each callable, run in turns (A B A B ...) so slow phases of a shared
    machine hit every variant alike. Returns {name: seconds}."""
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            started = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - started)
    return best


def default_study(name: str) -> dict:
    """A study of config/config.yaml, validated (the benchmarks use the default study's settings)."""
    from covpipe.config import load_config

    return load_config(ROOT / "config" / "config.yaml")["studies"][name]


def graph_teacher(prompt_format: str = "layers"):
    """The default graph study's teacher, in the given prompt format."""
    from covpipe.teachers import build_teacher

    return build_teacher({**default_study("graph_horizon")["teacher"], "prompt_format": prompt_format})


def graph_batch(teacher, n: int, horizon: int, seed: int = 0):
    return teacher.sample(n, horizon, np.random.default_rng(seed))


def transformer_spec() -> dict:
    return dict(default_study("graph_horizon")["models"]["transformer"])


@contextlib.contextmanager
def quiet_stderr():
    """Silence file descriptor 2 (C++ libraries print there, past Python's sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def one_thread() -> None:
    """A workflow job runs with one thread (snakemake --cores 2 runs two such jobs at once)."""
    torch.set_num_threads(1)
