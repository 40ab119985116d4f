"""Publish a finished run's aggregated outputs as `reference/{study}/`, with a provenance file.

A reference run is one a user cannot redo on a laptop (DESIGN section 4): its aggregated tables
and figures are committed small, never checkpoints or per-sequence tables. For each study of the
run's config this copies from `results/{study}/`

    metrics.parquet, train_log.parquet, selection.parquet (if the study selects), figures/*

(and the tables' own `*.provenance.json`) into `DEST/{study}/`, and writes
`DEST/{study}/provenance.json`: the command, the study's config and the file it came from (with
its sha256), the device (torch.cuda.get_device_name where a GPU ran), torch and CUDA versions,
whether TF32 matmuls were on, the run's wall time and exit status, the summed job seconds per
stage (from Snakemake's benchmark files), covpipe's version and the git commit.

    python -m covpipe.reference --workdir W --dest reference --config C --command "..." \
        --wall-seconds 412 --exit-code 0 --device cuda

`scripts/gpu-run.sh` calls it after Snakemake, also after a failed or time-limited run: a study
whose outputs are all there is published, one with missing outputs is published with them listed
under `missing` (and `complete: false`), a study with no output at all is skipped.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from . import __version__

TABLES = ("metrics.parquet", "train_log.parquet", "selection.parquet")


def machine(device: str) -> dict:
    """What ran the jobs: the device by name, torch and CUDA versions, TF32, CPU count, host."""
    import torch

    info = {
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info.update(
            device_name=torch.cuda.get_device_name(0),
            device_count=torch.cuda.device_count(),
            tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
        )
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info


def git_commit(repo: Path) -> str:
    """HEAD of the checkout (+ '-dirty' with uncommitted changes), else $COVPIPE_COMMIT, else 'unknown'."""
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("COVPIPE_COMMIT") or "unknown (no git checkout; set COVPIPE_COMMIT)"


def stage_seconds(workdir: Path, study: str) -> dict:
    """Summed wall seconds of the study's jobs per stage, from benchmarks/{study}/{stage}/**/*.tsv."""
    out = {}
    root = workdir / "benchmarks" / study
    for tsv in sorted(root.glob("*/**/*.tsv")):
        with tsv.open() as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if rows and "s" in rows[0]:
            stage = tsv.relative_to(root).parts[0]
            out[stage] = round(out.get(stage, 0.0) + sum(float(r["s"]) for r in rows), 1)
    return out


def expected(study_cfg: dict) -> list[str]:
    """The aggregated tables a study produces (selection only with a `selection:` section)."""
    return [t for t in TABLES if t != "selection.parquet" or study_cfg.get("selection")]


def publish(
    workdir, dest, config_path, *, command: str, wall_seconds: float, exit_code: int, device: str, repo=None
) -> dict:
    """Copy each study's aggregated outputs to dest/{study}/ and write its provenance.json.

    Returns {study: provenance record} for the studies published."""
    workdir, dest, config_path = Path(workdir), Path(dest), Path(config_path)
    raw = config_path.read_bytes()
    config = yaml.safe_load(raw)
    common = {
        "command": command,
        "config_file": str(config_path),
        "config_sha256": hashlib.sha256(raw).hexdigest(),
        "execution": config.get("execution", {}),
        "wall_seconds": round(wall_seconds, 1),
        "exit_code": exit_code,
        "covpipe_version": __version__,
        "git_commit": git_commit(Path(repo) if repo else Path(__file__).parents[1]),
        "machine": machine(device),
        "published_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    published = {}
    for study, cfg in config["studies"].items():
        src = workdir / "results" / study
        tables = [t for t in expected(cfg) if (src / t).exists()]
        figures = sorted(p for p in (src / "figures").glob("*") if p.is_file()) if (src / "figures").is_dir() else []
        if not tables and not figures:
            continue
        target = dest / study
        if target.exists():
            shutil.rmtree(target)
        (target / "figures").mkdir(parents=True)
        for t in tables:
            shutil.copy2(src / t, target / t)
            if (src / f"{t}.provenance.json").exists():
                shutil.copy2(src / f"{t}.provenance.json", target / f"{t}.provenance.json")
        for f in figures:
            shutil.copy2(f, target / "figures" / f.name)
        missing = [t for t in expected(cfg) if t not in tables]
        record = {
            **common,
            "study": study,
            "config": cfg,
            "complete": exit_code == 0 and not missing,
            "missing": missing,
            "files": tables + [f"figures/{f.name}" for f in figures],
            "stage_seconds": stage_seconds(workdir, study),
        }
        (target / "provenance.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        published[study] = record
    return published


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m covpipe.reference", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="the run's directory (results/, benchmarks/)")
    parser.add_argument("--dest", required=True, help="where {study}/ folders go, e.g. reference")
    parser.add_argument("--config", required=True, help="the config file the run used")
    parser.add_argument("--command", required=True)
    parser.add_argument("--wall-seconds", type=float, required=True)
    parser.add_argument("--exit-code", type=int, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repo", default=None, help="the checkout, for its git commit")
    args = parser.parse_args(argv)
    done = publish(
        args.workdir,
        args.dest,
        args.config,
        command=args.command,
        wall_seconds=args.wall_seconds,
        exit_code=args.exit_code,
        device=args.device,
        repo=args.repo,
    )
    for study, rec in done.items():
        state = "complete" if rec["complete"] else f"INCOMPLETE (missing: {', '.join(rec['missing']) or 'none'})"
        print(
            f"reference: {Path(args.dest) / study}: {len(rec['files'])} files, {state}; "
            f"device {rec['machine']['device_name']}"
        )
    if not done:
        print("reference: nothing to publish (no study produced an aggregated output)", file=sys.stderr)
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
