"""14. Planning without torch (issue 17, item 2): the dry run of the finished default study beside
Snakemake's own floor for the same DAG.

The floor runs the same Snakefile and rule files, with `covpipe` replaced (first on PYTHONPATH)
by a stand-in package that answers every call the workflow makes at planning time (the
validated config, every job's spec, the figure names) from a table computed beforehand: the
same rules, jobs, params and files, with no covpipe import. "Finished": every output exists,
made up to date by `snakemake --touch`, so both dry runs plan nothing and check everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Figure

CONFIG = "config/config.yaml"

STAND_IN = {
    "__init__.py": """import json, pathlib
TABLE = json.loads((pathlib.Path(__file__).parent / "table.json").read_text())
""",
    "config.py": """from . import TABLE
def load_config(files, overrides=None, in_cluster_job=False):
    return TABLE["config"]
""",
    "config_errors.py": """class ConfigError(Exception):
    pass
""",
    "registry.py": """class PluginError(Exception):
    pass
""",
    "report.py": """def headlines(study, results="results"):
    return []
""",
    "cli.py": """from . import TABLE
def execution_settings(config):
    return TABLE["execution_settings"]
""",
    "io.py": """def check_writable_dir(path, what="results directory"):
    pass
""",
    "distribute.py": """def start_run_instance(cores):
    return None
def stop_run_instance():
    pass
""",
    "plots.py": """import json
from . import TABLE
DRAW = dict.fromkeys(TABLE["draw"])
def outputs(figure_sets):
    return TABLE["outputs"][json.dumps(list(figure_sets))]
""",
    "specs.py": """import json
from . import TABLE
def _cell(*parts):
    return "|".join(map(str, parts))
def data_spec(study_name, study, horizon):
    return TABLE["data"][_cell(study_name, horizon)]
def select_data_spec(study_name, study, horizon):
    return TABLE["select_data"][_cell(study_name, horizon)]
def train_spec(study_name, study, model_name, horizon):
    return TABLE["train"][_cell(study_name, model_name, horizon)]
def finetune_spec(study_name, study, model_name, horizon):
    return TABLE["finetune"][_cell(study_name, model_name, horizon)]
def fit_spec(study_name, study, model_name, horizon):
    return TABLE["fit"][_cell(study_name, model_name, horizon)]
def cell_evaluate_spec(study_name, study, model_name, horizon):
    return TABLE["evaluate"][_cell(study_name, model_name, horizon)]
def select_spec(evaluate, selection):
    return TABLE["select"][_cell(evaluate["study"], evaluate["model_name"], evaluate["horizon"])]
def aggregate_spec():
    return TABLE["aggregate"]
def plot_spec(study):
    return TABLE["plot"][json.dumps(study["figures"])]
""",
}


def _table(config: Path) -> dict:
    """Everything the workflow asks covpipe while it plans, computed with the real covpipe."""
    from covpipe import cli, plots, specs
    from covpipe.config import load_config

    cfg = load_config([str(config)])
    t = {
        "config": cfg,
        "execution_settings": cli.execution_settings(cfg),
        "draw": list(plots.DRAW),
        "aggregate": specs.aggregate_spec(),
        "outputs": {},
        "plot": {},
        **{k: {} for k in ("data", "select_data", "train", "finetune", "fit", "evaluate", "select")},
    }
    for name, s in cfg["studies"].items():
        t["outputs"][json.dumps(s["figures"])] = plots.outputs(s["figures"])
        t["plot"][json.dumps(s["figures"])] = specs.plot_spec(s)  # studies with equal figures: same keys read
        for h in s["horizons"]:
            t["data"][f"{name}|{h}"] = specs.data_spec(name, s, h)
            if s["selection"]:
                t["select_data"][f"{name}|{h}"] = specs.select_data_spec(name, s, h)
            for m in s["models"]:
                key = f"{name}|{m}|{h}"
                t["train"][key] = specs.train_spec(name, s, m, h)
                if s["finetune"]:
                    t["finetune"][key] = specs.finetune_spec(name, s, m, h)
                t["fit"][key] = specs.fit_spec(name, s, m, h)
                t["evaluate"][key] = specs.cell_evaluate_spec(name, s, m, h)
                if s["selection"]:
                    t["select"][key] = specs.select_spec(t["evaluate"][key], s["selection"])
    return json.loads(json.dumps(t))  # as the stand-in reads it back


# Both dry runs start through this launcher. With a stand-in folder, its `covpipe` is imported
# first, so the Snakefile's imports find it in sys.modules (the editable install's import hook and
# the Snakefile's folder, which Snakemake puts on sys.path, would find the real one).
LAUNCH = """import sys
stand_in = sys.argv.pop(1)
if stand_in:
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
    sys.path.insert(0, stand_in)
    import covpipe
    assert covpipe.__file__.startswith(stand_in), covpipe.__file__
from snakemake.cli import main
main(sys.argv[1:])
"""


def _snakemake(workdir: Path, *args: str, stand_in: Path | None = None) -> tuple[float, str]:
    cmd = [
        sys.executable,
        "-c",
        LAUNCH,
        str(stand_in or ""),
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "1",
        *args,
    ]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return seconds, proc.stdout + proc.stderr


def _finish(workdir: Path) -> int:
    """Every output of the study, present and up to date (empty files, touched in DAG order)."""
    _, summary = _snakemake(workdir, "--summary")
    files = [line.split("\t")[0] for line in summary.splitlines()[1:] if "\t" in line]
    for f in files:
        path = workdir / f
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    _snakemake(workdir, "--touch")
    return len(files)


def run(quick: bool = False) -> list[Figure]:
    repeats = 3 if quick else 5
    with tempfile.TemporaryDirectory(prefix="covpipe-plan-") as tmp:
        tmp = Path(tmp)
        work = tmp / "study"
        (work / "config").mkdir(parents=True)
        (work / "config" / "config.yaml").write_text((ROOT / CONFIG).read_text())
        stand_in = tmp / "stand-in" / "covpipe"
        stand_in.mkdir(parents=True)
        for name, text in STAND_IN.items():
            (stand_in / name).write_text(text)
        (stand_in / "table.json").write_text(json.dumps(_table(ROOT / CONFIG)))
        n_files = _finish(work)
        real, floor = [], []
        for _ in range(repeats):  # interleaved: a disturbance hits both
            seconds, out = _snakemake(work, "-n", "--quiet", "rules")
            real.append(seconds)
            if "Nothing to be done" not in out:
                raise RuntimeError(f"the finished study still has jobs to run:\n{out[-2000:]}")
            seconds, out = _snakemake(work, "-n", "--quiet", "rules", stand_in=stand_in.parent)
            floor.append(seconds)
            if "Nothing to be done" not in out:
                raise RuntimeError(f"the floor plans other jobs than the study:\n{out[-2000:]}")
    real_s, floor_s = min(real), min(floor)
    ratio = real_s / floor_s
    print(
        f"  dry run of the finished default study ({n_files} files): {real_s:.2f} s with covpipe, "
        f"{floor_s:.2f} s with the stand-in (Snakemake's floor); minima of {repeats}"
    )
    return [
        Figure(
            14,
            "dry run of the finished default study, beside Snakemake's floor for the same DAG",
            "<= 1.3x the floor",
            f"{real_s:.2f} vs {floor_s:.2f} s",
            ratio,
            ratio <= 1.3,
        )
    ]
