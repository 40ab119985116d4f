"""Issue 17: time that is not the study itself.

11. `snakemake --version` as `make test` installs it, beside the same start where SLURM's client
    answers at once (an `scontrol` on PATH that fails at once: a machine without SLURM) and, for
    the record, with the slurm executor plugin on PYTHONPATH (SLURM's client installed here, no
    controller running: the plugin's `scontrol show config` waits up to its 10 s timeout).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Figure


def _seconds(cmd: list[str], env: dict) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - started


def _plugin_folder(tmp: Path) -> Path | None:
    """The slurm executor plugin installed into a scratch folder (pip, --no-deps), or None when pip
    cannot get it."""
    folder = tmp / "slurm-plugin"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(folder),
            "snakemake-executor-plugin-slurm>=2.8,<3",
            "snakemake-executor-plugin-slurm-jobstep>=0.6,<1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return folder if proc.returncode == 0 else None


def snakemake_start(quick: bool = False) -> list[Figure]:
    """Item 11 (issue 17, item 1): what SLURM costs a Snakemake start that does not use it."""
    snakemake = [sys.executable, "-m", "snakemake", "--version"]
    base = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="covpipe-start-") as tmp:
        tmp = Path(tmp)
        # An scontrol that fails at once, first on PATH: the start of a machine without SLURM.
        shim = tmp / "bin" / "scontrol"
        shim.parent.mkdir()
        shim.write_text("#!/bin/sh\nexit 1\n")
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
        floor_env = {**base, "PATH": f"{shim.parent}{os.pathsep}{base.get('PATH', '')}"}
        repeats = 2 if quick else 3
        installed = min(_seconds(snakemake, base) for _ in range(repeats))
        floor = min(_seconds(snakemake, floor_env) for _ in range(repeats))
        has_client = shutil.which("scontrol") is not None
        plugin = _plugin_folder(tmp)
        with_plugin = None
        if plugin is not None:
            env = {**base, "PYTHONPATH": os.pathsep.join(filter(None, [str(plugin), base.get("PYTHONPATH")]))}
            with_plugin = _seconds(snakemake, env)
    print(
        f"  snakemake --version: {installed:.2f} s as installed, {floor:.2f} s with SLURM answering at once; "
        f"with the slurm plugin: {'not installable here' if with_plugin is None else f'{with_plugin:.2f} s'} "
        f"(SLURM client {'installed' if has_client else 'absent'})"
    )
    ratio = installed / floor
    return [
        Figure(
            11,
            "`snakemake --version`, test install vs SLURM answering at once",
            "<= 1.1x (no SLURM cost)",
            f"{installed:.2f} vs {floor:.2f} s",
            ratio,
            ratio <= 1.1,
        ),
        Figure(
            11,
            "`snakemake --version` with the slurm plugin on the path (SLURM client installed, no controller)",
            "reported",
            "not measured: pip could not install the plugin" if with_plugin is None else f"{with_plugin:.2f} s",
            None,
            None,
        ),
    ]


# ---- 13. sweeps at scale (issue 17, item 7) -------------------------------------------------------

# (horizons, models): cells = horizons x models of one Markov study, count models (cheap checks)
SWEEPS = {500: (10, 50), 5_000: (50, 100), 50_000: (100, 500)}
SWEEP_TIMEOUT = 900  # seconds a dry run may take before it is reported as not finished


def sweep_config(horizons: int, models: int) -> dict:
    """A study of horizons x models cells: the default Markov study's teacher and settings, model
    entries that differ in one science setting each (so every cell is a distinct job)."""
    return {
        "studies": {
            "sweep": {
                "teacher": {
                    "name": "markov",
                    "vocab_size": 8,
                    "order": 1,
                    "alpha": 0.5,
                    "prompt": "start_state",
                    "seed": 0,
                },
                "horizons": list(range(1, horizons + 1)),
                "seeds": 3,
                "data": {"n_train": 256, "n_eval": 2000},
                "models": {f"m{i}": {"class": "ngram", "order": 1, "smoothing": 0.5 + i / 1000} for i in range(models)},
                "train": {"steps": 600, "checkpoints": [600]},
            }
        }
    }


_MEASURED = """
import resource, subprocess, sys, time
started = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.perf_counter() - started
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
print(f"{proc.returncode} {seconds} {rss}")
sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
"""


def _dry_run(directory: Path, profile: Path | None = None, timeout=SWEEP_TIMEOUT):
    """(seconds, peak RSS MiB, jobs planned) of `snakemake -n` on directory's config/config.yaml;
    None when it ran past `timeout`."""
    from orchestration import _jobs

    prof = ["-m", "cProfile", "-o", str(profile)] if profile else []
    cmd = [
        sys.executable,
        "-c",
        _MEASURED,
        sys.executable,
        *prof,
        "-m",
        "snakemake",
        "-s",
        str(Path(__file__).resolve().parents[1] / "Snakefile"),
        "--directory",
        str(directory),
        "-n",
        "--cores",
        "2",
        "--quiet",
        "rules",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    code, seconds, rss = proc.stdout.split()
    if code != "0":
        raise RuntimeError(f"snakemake -n failed:\n{proc.stderr[-3000:]}")
    return float(seconds), int(rss) / 1024, sum(_jobs(proc.stderr).values())


def _profile_top(path: Path, n: int = 6) -> list[tuple[str, float]]:
    """The n functions of a cProfile run with the most self time: [(file:function, seconds)]."""
    import pstats

    stats = pstats.Stats(str(path)).stats.items()
    top = sorted(((f"{Path(f).name}:{fn}", tot) for (f, _, fn), (_, _, tot, _, _) in stats), key=lambda kv: -kv[1])
    return top[:n]


def _profile_shares(path: Path) -> dict[str, float]:
    """Self time of a cProfile run grouped by where the code lives: {group: seconds}."""
    import pstats

    groups: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, _) in pstats.Stats(str(path)).stats.items():
        f = filename.replace("\\", "/")
        group = next(
            (
                g
                for g, key in [
                    ("covpipe", "/covpipe/"),
                    ("workflow rules (covpipe's .smk)", ".smk"),
                    ("snakemake", "/snakemake"),
                    ("torch", "/torch/"),
                    ("pydantic", "pydantic"),
                    ("polars", "/polars/"),
                    ("import machinery", "<frozen"),
                    ("builtins (C)", "~"),
                ]
                if key in f
            ),
            "other",
        )
        groups[group] = groups.get(group, 0.0) + tottime
    return groups


def sweeps(quick: bool = False) -> list[Figure]:
    """Item 13 (issue 17, item 7): the dry run of studies of 500, 5,000 and 50,000 cells."""
    import yaml

    sizes = [500, 5_000] if quick else [500, 5_000, 50_000]
    measured = {}
    with tempfile.TemporaryDirectory(prefix="covpipe-sweep-") as tmp:
        for cells in sizes:
            directory = Path(tmp) / str(cells)
            (directory / "config").mkdir(parents=True)
            (directory / "config" / "config.yaml").write_text(yaml.safe_dump(sweep_config(*SWEEPS[cells])))
            measured[cells] = _dry_run(directory)
            if measured[cells] is None:
                print(f"  {cells:,} cells: the dry run did not finish in {SWEEP_TIMEOUT} s")
                continue
            seconds, rss, jobs = measured[cells]
            print(
                f"  {cells:,} cells ({jobs:,} jobs): snakemake -n {seconds:.1f} s, peak {rss:.0f} MiB, "
                f"{seconds / cells * 1e3:.2f} ms per cell"
            )
        directory = Path(tmp) / "5000"
        profile = Path(tmp) / "5000.prof"
        if measured.get(5_000) is not None and _dry_run(directory, profile) is not None:
            shares = _profile_shares(profile)
            total = sum(shares.values())
            print(
                "  where the 5,000-cell dry run spends its time (cProfile, self time): "
                + ", ".join(
                    f"{g} {s / total:.0%}"
                    for g, s in sorted(shares.items(), key=lambda kv: -kv[1])
                    if s / total >= 0.01
                )
            )
            print(
                "  its functions with the most self time: "
                + ", ".join(f"{name} {s / total:.0%}" for name, s in _profile_top(profile))
            )
    figures = []
    mid = measured.get(5_000)
    if mid is not None:
        figures.append(
            Figure(
                13,
                "dry run of a 5,000-cell study (1 study x 50 horizons x 100 models)",
                "<= 30 s",
                f"{mid[0]:.1f} s, {mid[2]:,} jobs, peak {mid[1]:.0f} MiB",
                mid[0] / 30,
                mid[0] <= 30,
            )
        )
    else:
        figures.append(
            Figure(13, "dry run of a 5,000-cell study", "<= 30 s", f"did not finish in {SWEEP_TIMEOUT} s", None, False)
        )
    pairs = [(a, b) for a, b in [(500, 5_000), (5_000, 50_000)] if measured.get(a) and measured.get(b)]
    for a, b in pairs:
        # growth per cell beyond the fixed start-up (imports, the Snakefile): the time of the small
        # plan is taken as fixed cost plus a share per cell; at most linear means the per-cell part
        # of the larger plan is no larger than the smaller one's (within 30%: a shared machine)
        grow = (measured[b][0] / b) / (measured[a][0] / a)
        figures.append(
            Figure(
                13,
                f"planning growth, {a:,} -> {b:,} cells: seconds per cell, larger / smaller",
                "<= 1.3 (at most linear)",
                f"{measured[a][0]:.1f} s -> {measured[b][0]:.1f} s; peak "
                f"{measured[a][1]:.0f} -> {measured[b][1]:.0f} MiB",
                grow,
                grow <= 1.3,
            )
        )
    if not quick and measured.get(50_000) is None:
        figures.append(Figure(13, "dry run of a 50,000-cell study", "reported", f"did not finish in {SWEEP_TIMEOUT} s"))
    return figures


# ---- 12. start-up share of job-minutes (issue 17, item 3; measured, nothing restructured) ----------

STUDY_CONFIGS = {"make run": "config/config.yaml", "make interventions": "config/interventions.yaml"}
# What a stage imports on first use beyond its adapter's imports (covpipe.plots' draw modules import these).
FIRST_USE = {"plot": ["matplotlib.pyplot", "seaborn"]}


def _stage_imports(root: Path) -> dict[str, list[str]]:
    """{rule: the covpipe modules its script adapter imports}, read from workflow/rules and scripts."""
    import re

    out = {}
    for smk in sorted((root / "workflow" / "rules").glob("*.smk")):
        for rule, script in re.findall(r"^rule (\w+):.*?^\s+script:\s*\n\s+\"([^\"]+)\"", smk.read_text(), re.M | re.S):
            text = (smk.parent / script).resolve().read_text()
            out[rule] = sorted(
                set(re.findall(r"^(?:from|import) (covpipe[\w.]*)", text, re.M))
                | {f"covpipe.{m}" for m in re.findall(r"^from covpipe import (\w+)", text, re.M)}
            )
    return out


def _job_start(modules: list[str], repeats: int) -> float:
    """Seconds from a fresh interpreter to a job's first line of work: Python, the script preamble
    Snakemake prepends (snakemake.script) and the adapter's covpipe imports. A lower bound: the
    job's own set-up (reading its inputs, building the teacher) comes on top."""
    code = "import snakemake.script\n" + "".join(f"import {m}\n" for m in modules)
    return min(_seconds([sys.executable, "-c", code], dict(os.environ)) for _ in range(repeats))


def _job_minutes(workdir: Path, studies: set[str]) -> dict[str, tuple[int, float]]:
    """{rule: (jobs, job-minutes)} of the finished jobs of `studies` in Snakemake's benchmark files
    (benchmarks/{study}/{rule}/...: train, finetune, evaluate and select jobs; the short data,
    aggregate and plot jobs have none, so a share over these leaves out the jobs whose share is largest)."""
    from orchestration import _read_benchmarks

    out: dict[str, tuple[int, float]] = {}
    for study, rows in _read_benchmarks(workdir).items():
        if study in studies:
            for job, seconds, _ in rows:
                parts = Path(job).parts
                rule = parts[1] if len(parts) > 1 else job
                n, minutes = out.get(rule, (0, 0.0))
                out[rule] = (n + 1, minutes + seconds / 60)
    return out


def startup_share(quick: bool = False, workdir: Path | None = None) -> list[Figure]:
    """Item 12: start-up minutes per stage over the jobs of `make run` and `make interventions`,
    and their share of job-minutes where a finished run's benchmarks/ is there to divide by."""
    import yaml
    from common import ROOT
    from orchestration import _jobs

    workdir = workdir or ROOT
    imports = _stage_imports(ROOT)
    start = {rule: _job_start(mods + FIRST_USE.get(rule, []), 2 if quick else 3) for rule, mods in imports.items()}
    print(
        "  job start-up (python + snakemake.script + the adapter's imports), seconds: "
        + ", ".join(f"{r} {s:.2f}" for r, s in start.items())
    )
    figures = []
    for what, config in STUDY_CONFIGS.items():
        with tempfile.TemporaryDirectory(prefix="covpipe-share-") as tmp:
            (Path(tmp) / "config").mkdir()
            shutil.copy(ROOT / config, Path(tmp) / "config" / "config.yaml")
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "snakemake",
                    "-s",
                    str(ROOT / "Snakefile"),
                    "--directory",
                    tmp,
                    "-n",
                    "--cores",
                    "2",
                    "--quiet",
                    "rules",
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )
        jobs = _jobs(proc.stdout + proc.stderr)
        jobs.pop("all", None)
        startup = {rule: n * start.get(rule, 0.0) / 60 for rule, n in jobs.items()}
        studies = set(yaml.safe_load((ROOT / config).read_text())["studies"])
        done = _job_minutes(workdir, studies)  # the finished jobs' own minutes, where a run left them
        total_start, total_jobs = sum(startup.values()), sum(jobs.values())
        print(
            f"  {what} ({config}): {total_jobs} jobs, start-up {total_start:.1f} job-minutes: "
            + ", ".join(f"{r} {n} x {start.get(r, 0):.1f} s" for r, n in jobs.items())
        )
        if done:
            ran = sum(n for n, _ in done.values())
            spent = sum(m for _, m in done.values())
            starts = sum(n * start.get(r, 0.0) / 60 for r, (n, _) in done.items())
            share = starts / spent
            print(
                f"    over the {ran} benchmarked jobs in {workdir / 'benchmarks'} ({', '.join(done)}; data, aggregate "
                f"and plot jobs have no benchmark file): start-up {starts:.1f} of {spent:.1f} "
                "job-minutes; by stage: "
                + ", ".join(f"{r} {n * start.get(r, 0.0) / 60 / m:.0%}" for r, (n, m) in done.items() if m)
            )
            figures.append(
                Figure(
                    12,
                    f"start-up share of job-minutes, {what}'s benchmarked jobs ({ran} of {total_jobs})",
                    "<= 10%",
                    f"{starts:.1f} of {spent:.1f} job-minutes",
                    share,
                    share <= 0.10,
                )
            )
        else:
            figures.append(
                Figure(
                    12,
                    f"start-up of {what}'s jobs (no finished run's benchmarks/ to divide by)",
                    "<= 10% of job-minutes",
                    f"{total_start:.1f} job-minutes over {total_jobs} jobs",
                )
            )
    return figures
