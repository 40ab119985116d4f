"""Config validation, wildcard constraints and the science slices each rule receives."""

import re
import sys

import covpipe.data
import covpipe.evaluate
import covpipe.io
import covpipe.plots
import covpipe.train
from covpipe.config import ConfigError, validate_config

_source = ", ".join(str(p) for p in workflow.configfiles) or "config"
try:
    CFG = validate_config(config, source=_source)
except ConfigError as exc:
    sys.exit(f"covpipe: invalid config: {exc}")
try:
    covpipe.io.check_writable_dir("results")
except OSError as exc:
    sys.exit(f"covpipe: {exc}")

STUDIES = CFG["studies"]
EXECUTION = CFG["execution"]


def _alternatives(values):
    return "|".join(sorted({re.escape(str(v)) for v in values}))


wildcard_constraints:
    study=_alternatives(STUDIES),
    model=_alternatives(m for s in STUDIES.values() for m in s["models"]),
    horizon=_alternatives(h for s in STUDIES.values() for h in s["horizons"]),
    figure=_alternatives(covpipe.plots.DRAW),


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
        out += study_figures(study)
    return out


def study_figures(study):
    """Figure (and figure-table) files of one study, from its `figures:` sets."""
    names = covpipe.plots.outputs(STUDIES[study]["figures"])
    return [f"results/{study}/figures/{name}" for name in names]


def data_spec(wildcards):
    """Science settings of one (study, horizon) data job."""
    return covpipe.data.data_spec(
        wildcards.study, STUDIES[wildcards.study], int(wildcards.horizon)
    )


def train_spec(wildcards):
    """Science settings of one (study, model, horizon) training job."""
    return covpipe.train.train_spec(
        wildcards.study,
        STUDIES[wildcards.study],
        wildcards.model,
        int(wildcards.horizon),
    )


def evaluate_spec(wildcards):
    """Science settings of one evaluation job: its training spec plus evaluation settings."""
    return covpipe.evaluate.evaluate_spec(
        train_spec(wildcards), STUDIES[wildcards.study]["evaluate"]
    )


def plot_spec(wildcards):
    """What one figure depends on: the study's evaluation settings and the plotting code version."""
    return {
        "evaluate": STUDIES[wildcards.study]["evaluate"],
        "figures": STUDIES[wildcards.study]["figures"],
        "version": covpipe.plots.VERSION,
    }
