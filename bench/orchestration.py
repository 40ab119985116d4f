"""Items 5 and 6: the workflow around the package.

5. `snakemake -n` on a finished default study (results/ and Snakemake's metadata in .snakemake/),
   and the jobs planned after one evaluation level of config/config.yaml changes (a modified copy
   passed with --configfile; the config itself is never touched): no training job may be replanned.
6. `make run`: wall time per study and the peak memory of the largest job. Read from the
   Snakemake benchmark files of the finished study in benchmarks/ (job seconds, max RSS), or,
   with --fresh, measured: each study of config/config.yaml run on its own with
   `snakemake --cores 2` in a scratch directory (about 20 minutes in all).
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import ROOT, Figure


def _snakemake(workdir: Path, *args, timeout=1800):
    """Snakemake in `workdir`, with that checkout's Snakefile and covpipe when it has them (else this one's)."""
    env = dict(os.environ)
    if (workdir / "covpipe").is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(workdir), os.environ.get("PYTHONPATH")]))
    snakefile = workdir / "Snakefile" if (workdir / "Snakefile").exists() else ROOT / "Snakefile"
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(workdir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def _jobs(stdout: str) -> dict[str, int]:
    if "Nothing to be done" in stdout or "Job stats:" not in stdout:
        return {}
    table = stdout.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def orchestration(quick: bool = False, workdir: Path = ROOT) -> list[Figure]:
    if not (workdir / "results").is_dir():
        print(f"  no study in {workdir / 'results'}: run `make run` first (about 20 min), then this benchmark")
        return [
            Figure(5, "snakemake -n on a finished default study", "< 3 s", "not measured: no results/ (run make run)")
        ]
    times, plan = [], None
    for _ in range(2 if quick else 3):
        started = time.perf_counter()
        proc = _snakemake(workdir, "-n", "--cores", "2")
        times.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise RuntimeError(f"snakemake -n failed:\n{proc.stderr[-2000:]}")
        plan = _jobs(proc.stdout)
    dry = min(times)
    finished = not plan
    print(
        f"  snakemake -n: {dry:.2f} s (best of {len(times)}); "
        + (
            "nothing to be done: a finished study"
            if finished
            else f"NOT a finished study of this code: {sum(plan.values())} jobs planned {plan}"
        )
    )

    cfg = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    changed = copy.deepcopy(cfg)
    study = next(iter(changed["studies"]))
    levels = changed["studies"][study]["evaluate"]["levels"]
    old = levels[0]
    levels[0] = old + 1 if old + 1 not in levels else old + 0.5
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "changed.yaml"
        path.write_text(yaml.safe_dump(changed, sort_keys=False))
        started = time.perf_counter()
        proc = _snakemake(workdir, "-n", "--cores", "2", "--configfile", str(path))
        changed_s = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake -n --configfile failed:\n{proc.stderr[-2000:]}")
    after = _jobs(proc.stdout)
    new_train = after.get("train", 0) - plan.get("train", 0)
    print(
        f"  after {study}.evaluate.levels[0]: {old} -> {levels[0]}: {after} planned ({changed_s:.2f} s); "
        f"training jobs added by the change: {new_train}"
    )
    return [
        Figure(
            5,
            "snakemake -n on a finished default study",
            "< 3 s",
            f"{dry:.2f} s" + ("" if finished else f" (not finished: {sum(plan.values())} jobs planned)"),
            dry,
            dry < 3 if finished else None,
        ),
        Figure(
            5,
            "training jobs replanned after changing one evaluation level",
            "0",
            f"{new_train} (evaluate {after.get('evaluate', 0)}, aggregate {after.get('aggregate', 0)}, "
            f"plot {after.get('plot', 0)})",
            float(new_train),
            new_train == 0,
        ),
    ]


def _read_benchmarks(root: Path) -> dict[str, list[tuple[str, float, float]]]:
    """{study: [(job, seconds, max_rss MiB)]} from Snakemake benchmark files under root/benchmarks."""
    out: dict[str, list] = {}
    for path in sorted((root / "benchmarks").rglob("*.tsv")):
        lines = path.read_text().splitlines()
        if len(lines) < 2:
            continue
        head, row = lines[0].split("\t"), lines[1].split("\t")
        rec = dict(zip(head, row))
        rss = float(rec["max_rss"]) if rec.get("max_rss", "NA") not in ("NA", "-") else 0.0
        study = path.relative_to(root / "benchmarks").parts[0]
        out.setdefault(study, []).append(
            (str(path.relative_to(root / "benchmarks").with_suffix("")), float(rec["s"]), rss)
        )
    return out


def end_to_end(quick: bool = False, workdir: Path = ROOT, fresh: bool = False) -> list[Figure]:
    if fresh:
        return _fresh(workdir)
    jobs = _read_benchmarks(workdir)
    if not jobs:
        print(
            f"  no Snakemake benchmark files in {workdir / 'benchmarks'}: run `make run` first, or "
            "`python bench/run.py end_to_end --fresh` (about 20 min)"
        )
        return [
            Figure(6, "make run wall time (default study set, 2 cores)", "< 20 min", "not measured: no benchmarks/")
        ]
    total = sum(s for rows in jobs.values() for _, s, _ in rows)
    for study, rows in jobs.items():
        secs = sum(s for _, s, _ in rows)
        job, _, rss = max(rows, key=lambda r: r[2])
        print(f"  {study}: {len(rows)} jobs, {secs / 60:.1f} job-minutes, largest job {job} at {rss:.0f} MiB")
    job, _, peak = max((r for rows in jobs.values() for r in rows), key=lambda r: r[2])
    print(
        f"  {total / 60:.1f} job-minutes in all; on 2 cores the wall time is at least half that, {total / 120:.1f} min"
    )
    figures = [
        Figure(
            6,
            "make run, job-minutes / 2 cores (lower bound on wall time)",
            "reported",
            f"{total / 120:.1f} min (from benchmarks/)",
            None,
            None,
        )
    ]
    run = _last_complete_run(workdir, sum(len(rows) for rows in jobs.values()))
    if run is None:
        print("  no Snakemake log of one run that did every job: `--fresh` measures one clean run per study")
    else:
        log_name, n_jobs, wall = run
        print(f"  the last complete run ({log_name}): {n_jobs} jobs in {wall / 60:.1f} min wall")
        figures.append(
            Figure(
                6,
                "make run wall time, all default studies (last complete run)",
                "< 20 min",
                f"{wall / 60:.1f} min, {n_jobs} jobs",
                wall / 60 / 20,
                wall < 1200,
            )
        )
    return figures + [
        Figure(
            6, "peak memory of the largest job", "< 4 GiB", f"{peak / 1024:.2f} GiB ({job})", peak / 4096, peak < 4096
        ),
    ]


def _last_complete_run(workdir: Path, n_benchmarked: int):
    """(log name, jobs, wall seconds) of the newest Snakemake log of a run that did every benchmarked
    job (and the `all` target) to 100%, or None."""
    for path in sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"), reverse=True):
        text = path.read_text(errors="replace")
        done = re.search(r"^(\d+) of (\d+) steps \(100%\) done", text, re.M)
        elapsed = re.search(r"^Elapsed time: (\d+):(\d+):([\d.]+)", text, re.M)
        if done and elapsed and int(done.group(1)) == int(done.group(2)) > n_benchmarked:
            h, m, sec = elapsed.groups()
            return path.name, int(done.group(1)), int(h) * 3600 + int(m) * 60 + float(sec)
    return None


def _fresh(workdir: Path) -> list[Figure]:
    cfg = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    walls, peaks = {}, {}
    with tempfile.TemporaryDirectory(prefix="covpipe-e2e-") as tmp:
        for study, body in cfg["studies"].items():
            run_dir = Path(tmp) / study
            (run_dir / "config").mkdir(parents=True)
            one = {k: v for k, v in cfg.items() if k != "studies"} | {"studies": {study: body}}
            (run_dir / "config" / "config.yaml").write_text(yaml.safe_dump(one, sort_keys=False))
            started = time.perf_counter()
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "snakemake",
                    "-s",
                    str(workdir / "Snakefile"),
                    "--directory",
                    str(run_dir),
                    "--cores",
                    "2",
                ],
                capture_output=True,
                text=True,
                timeout=3600,
            )
            walls[study] = time.perf_counter() - started
            if proc.returncode != 0:
                raise RuntimeError(f"snakemake on {study} failed:\n{proc.stderr[-3000:]}")
            rows = _read_benchmarks(run_dir).get(study, [])
            peaks[study] = max(rows, key=lambda r: r[2]) if rows else ("-", 0.0, 0.0)
            print(
                f"  {study}: {walls[study] / 60:.1f} min wall on 2 cores, largest job {peaks[study][0]} at "
                f"{peaks[study][2]:.0f} MiB"
            )
    total = sum(walls.values())
    job, _, peak = max(peaks.values(), key=lambda r: r[2])
    return [
        Figure(6, f"make run wall time, {study}", "reported", f"{walls[study] / 60:.1f} min") for study in walls
    ] + [
        Figure(
            6,
            "make run wall time, all studies (2 cores)",
            "< 20 min",
            f"{total / 60:.1f} min",
            total / 60 / 20,
            total < 1200,
        ),
        Figure(
            6, "peak memory of the largest job", "< 4 GiB", f"{peak / 1024:.2f} GiB ({job})", peak / 4096, peak < 4096
        ),
    ]
