"""Issue 17: time that is not the study itself.

10. `snakemake --version` as `make test` installs it, beside the same start where SLURM's client
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
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(folder),
                           "snakemake-executor-plugin-slurm>=2.8,<3", "snakemake-executor-plugin-slurm-jobstep>=0.6,<1"],
                          capture_output=True, text=True, timeout=600)
    return folder if proc.returncode == 0 else None


def snakemake_start(quick: bool = False) -> list[Figure]:
    """Item 10 (issue 17, item 1): what SLURM costs a Snakemake start that does not use it."""
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
    print(f"  snakemake --version: {installed:.2f} s as installed, {floor:.2f} s with SLURM answering at once; "
          f"with the slurm plugin: {'not installable here' if with_plugin is None else f'{with_plugin:.2f} s'} "
          f"(SLURM client {'installed' if has_client else 'absent'})")
    ratio = installed / floor
    return [
        Figure(10, "`snakemake --version`, test install vs SLURM answering at once", "<= 1.1x (no SLURM cost)",
               f"{installed:.2f} vs {floor:.2f} s", ratio, ratio <= 1.1),
        Figure(10, "`snakemake --version` with the slurm plugin on the path (SLURM client installed, no controller)",
               "reported", "not measured: pip could not install the plugin" if with_plugin is None
               else f"{with_plugin:.2f} s", None, None),
    ]
