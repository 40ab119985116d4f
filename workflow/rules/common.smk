"""Config validation, wildcard constraints and the science slices each rule receives."""

import re
import sys

# Planning imports no torch, Ray or matplotlib (tests/test_planning.py): the modules below load
# theirs only when a job runs.
import covpipe.cli
import covpipe.distribute
import covpipe.io
import covpipe.plots
import covpipe.specs

# CFG is read by covpipe's own loader (the one `covpipe check` uses), never from Snakemake's
# `config`: the Snakefile calls workflow_config() before its `configfile:` directive.
try:
    covpipe.io.check_writable_dir("results")
    covpipe.io.check_writable_dir("logs", "logs directory")
except OSError as exc:
    sys.exit(f"covpipe: {exc}")

if covpipe.cli.execution_settings(config) != covpipe.cli.execution_settings(CFG):
    # jobs read execution settings from Snakemake's `config`: it must say what covpipe read
    sys.exit(
        "covpipe: invalid config: execution: Snakemake's loader read other settings than covpipe's "
        "(YAML templating?); covpipe reads config files literally"
    )

STUDIES = CFG["studies"]
EXECUTION = CFG["execution"]


# GPUs a train/finetune/evaluate job asks a cluster scheduler for (the slurm executor's `gpu` resource).
GPUS_PER_JOB = 1 if EXECUTION["device"] == "cuda" else 0


def _alternatives(values):
    return "|".join(sorted({re.escape(str(v)) for v in values}))


wildcard_constraints:
    study=_alternatives(STUDIES),
    model=_alternatives(m for s in STUDIES.values() for m in s["models"]),
    horizon=_alternatives(h for s in STUDIES.values() for h in s["horizons"]),
    figure=_alternatives(covpipe.plots.DRAW),


def _check_every_cell_is_planned():
    """Every configured (study, model, horizon) cell parses back to itself under the wildcard
    constraints, so no name can make Snakemake plan nothing for a cell (or the wrong one).
    """
    pattern = re.compile(
        rf"results/(?P<study>{_alternatives(STUDIES)})/train/model~(?P<model>"
        rf"{_alternatives(m for s in STUDIES.values() for m in s['models'])})/horizon~(?P<horizon>"
        rf"{_alternatives(h for s in STUDIES.values() for h in s['horizons'])})/checkpoints\.pt"
    )
    for study, s in STUDIES.items():
        for model in s["models"]:
            for horizon in s["horizons"]:
                path = f"results/{study}/train/model~{model}/horizon~{horizon}/checkpoints.pt"
                got = pattern.fullmatch(path)
                if not got or got.groups() != (study, model, str(horizon)):
                    sys.exit(
                        f"covpipe: invalid config: studies.{study}.models.{model}: the cell at horizon "
                        f"{horizon} would not be planned as itself; rename the model"
                    )


_check_every_cell_is_planned()


def _run_instance_wanted():
    """execution.ray_address: run asks for one local Ray instance for this run (jobs on this
    machine only: a cluster's jobs could not reach it)."""
    return (
        EXECUTION["ray_address"] == "run"
        and EXECUTION["backend"] != "serial"
        and workflow.local_exec
        and not workflow.dryrun
    )


onstart:
    # Stops an instance a killed run left behind, then starts this run's; jobs attach to it.
    if _run_instance_wanted():
        print(
            "covpipe: the run's Ray instance at "
            f"{covpipe.distribute.start_run_instance(workflow.cores)}"
        )


onsuccess:
    covpipe.distribute.stop_run_instance()


onerror:
    covpipe.distribute.stop_run_instance()


def chain_priority(wildcards):
    """Jobs that head a longer chain start first: a study that fine-tunes and selects has two more
    stages after training, so its jobs are the critical path of a run (an execution matter: it
    orders jobs and reruns nothing)."""
    study = STUDIES[wildcards.study]
    return int(bool(study["finetune"])) + int(bool(study["selection"]))


def study_cells(study):
    """(model, horizon) pairs of one study."""
    s = STUDIES[study]
    return [(m, h) for m in s["models"] for h in s["horizons"]]


def all_outputs():
    out = []
    for study in STUDIES:
        out += [
            f"results/{study}/metrics.parquet",
            f"results/{study}/train_log.parquet",
        ]
        if STUDIES[study]["selection"]:
            out.append(f"results/{study}/selection.parquet")
        out += study_figures(study)
    return out


def checkpoints_of(wc):
    """The checkpoints a study evaluates: fine-tuned ones when it has a finetune stage."""
    stage = "finetune" if STUDIES[wc.study]["finetune"] else "train"
    return f"results/{wc.study}/{stage}/model~{wc.model}/horizon~{wc.horizon}/checkpoints.pt"


def selection_tables(wc):
    """Per-(model, horizon) selection tables of a study with a `selection:` section."""
    return [
        f"results/{wc.study}/select/model~{m}/horizon~{h}/selection.parquet"
        for m, h in study_cells(wc.study)
    ]


def cell_metrics(wc):
    """The metrics tables of every cell of a study (the aggregate rule's input)."""
    return [
        f"results/{wc.study}/eval/model~{m}/horizon~{h}/metrics.parquet"
        for m, h in study_cells(wc.study)
    ]


def cell_train_logs(wc):
    """The training logs of every cell of a study."""
    return [
        f"results/{wc.study}/train/model~{m}/horizon~{h}/train_log.parquet"
        for m, h in study_cells(wc.study)
    ]


def cell_finetune_logs(wc):
    """The fine-tuning logs of every cell of a study that fine-tunes; none otherwise."""
    if not STUDIES[wc.study]["finetune"]:
        return []
    return [
        f"results/{wc.study}/finetune/model~{m}/horizon~{h}/train_log.parquet"
        for m, h in study_cells(wc.study)
    ]


def study_selection_table(wc):
    """A study's selection table, for its figures, where it has a selection section."""
    return (
        [f"results/{wc.study}/selection.parquet"]
        if STUDIES[wc.study]["selection"]
        else []
    )


def study_figures(study):
    """Figure (and figure-table) files of one study, from its `figures:` sets."""
    names = covpipe.plots.outputs(STUDIES[study]["figures"])
    return [f"results/{study}/figures/{name}" for name in names]


def data_spec(wildcards):
    """Science settings of one (study, horizon) data job."""
    return covpipe.specs.data_spec(
        wildcards.study, STUDIES[wildcards.study], int(wildcards.horizon)
    )


def train_spec(wildcards):
    """Science settings of one (study, model, horizon) training job."""
    return covpipe.specs.train_spec(
        wildcards.study,
        STUDIES[wildcards.study],
        wildcards.model,
        int(wildcards.horizon),
    )


def finetune_spec(wildcards):
    """Science settings of one fine-tuning job (its pre-training spec included)."""
    return covpipe.specs.finetune_spec(
        wildcards.study,
        STUDIES[wildcards.study],
        wildcards.model,
        int(wildcards.horizon),
    )


def evaluate_spec(wildcards):
    """Science settings of one evaluation job: its training (or fine-tuning) spec plus evaluation settings."""
    return covpipe.specs.cell_evaluate_spec(
        wildcards.study,
        STUDIES[wildcards.study],
        wildcards.model,
        int(wildcards.horizon),
    )


def select_data_spec(wildcards):
    """Science settings of one held-out selection sample."""
    return covpipe.specs.select_data_spec(
        wildcards.study, STUDIES[wildcards.study], int(wildcards.horizon)
    )


def select_spec(wildcards):
    """Science settings of one selection job: its evaluation spec plus the selection settings."""
    return covpipe.specs.select_spec(
        evaluate_spec(wildcards), STUDIES[wildcards.study]["selection"]
    )


def plot_spec(wildcards):
    """What one figure depends on: the study's evaluation settings and the plotting code version."""
    return covpipe.specs.plot_spec(STUDIES[wildcards.study])
