"""Running the real Snakemake workflow from tests."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]


def mini_config_writer(directory: Path, cfg: dict) -> None:
    """Write cfg as DIRECTORY/config/config.yaml (configfile: resolves against the run directory)."""
    (directory / "config").mkdir(parents=True, exist_ok=True)
    (directory / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def snakemake(directory: Path, *args, check=True, cores="2"):
    proc = subprocess.run(
        [*SNAKEMAKE, "--directory", str(directory), "--cores", cores, *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def planned_jobs(directory: Path) -> dict[str, int]:
    """Job counts of a dry run, from Snakemake's 'Job stats' table."""
    out = snakemake(directory, "-n").stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def snapshot(directory: Path) -> dict:
    """(size, mtime_ns) of every file under results/."""
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in (directory / "results").rglob("*")
        if p.is_file()
    }


def planned_inputs(directory: Path, *args) -> dict[str, list[set[str]]]:
    """{rule: [the input files of each planned job]} from a dry run's job listing."""
    out = snakemake(directory, "-n", *args).stdout
    jobs = {}
    for m in re.finditer(r"^rule (\w+):\n((?:    .*\n)+)", out, re.M):
        inputs = re.search(r"^    input: (.*)$", m.group(2), re.M)
        jobs.setdefault(m.group(1), []).append(set(inputs.group(1).split(", ")) if inputs else set())
    return jobs
