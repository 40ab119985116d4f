"""Figures and figure tables of one study, drawn from its aggregated metrics table (and its selection
table) only: PNG on the Agg backend, markdown tables.

A study lists the figure sets it wants (`figures:` in its config); FIGURE_SETS maps each set to its
files and each file to the function that draws it, named "module:function" within this package:

    horizon        final KL and Cov_N against H, the coverage profile, KL over training  horizon.py
    training       the paper's Figure 2 layout and a per-class table                     training.py
    finetune       the paper's Figure 1 layout and the selection tables                  finetune.py
    interventions  the learners against H and against the sample size T                  interventions.py
    rate           the sample-size sweep and when each learner learns                    interventions.py
    hard_instance  Prop. 3.2's KL >= H/(4n) across seeds, plus the interventions files   hard_instance.py
    lower_bound    Prop. 5.1's coverage bound on App. I.4's instances                    lower_bound.py

Shared helpers (saving, bands, palettes, legends, log axes, the last checkpoint's rows) are in
common.py.

Each module's docstring says what its files show. Every draw function has one signature,
`draw(metrics, path, spec, selection=None)`: metrics, the study's long-format metrics table
(polars); path, the file to write; spec, covpipe.specs.plot_spec of the study; selection, its
selection table (polars) or None where it has no selection stage.

Importing this package imports no matplotlib, seaborn or torch: the Snakefile reads the registry
while it plans (tests/test_planning.py); a draw module and its pyplot load when a figure is drawn.
"""

from __future__ import annotations

import importlib

from .. import io

FIGURE_SETS = {
    "horizon": {
        "kl_vs_horizon.png": "horizon:kl_vs_horizon",
        "coverage_vs_horizon.png": "horizon:coverage_vs_horizon",
        "coverage_profile.png": "horizon:coverage_profile",
        "training_curves.png": "horizon:training_curves",
    },
    "training": {
        "over_training.png": "training:over_training",
        "coverage_profile.png": "horizon:coverage_profile",
        "per_class.md": "training:per_class_table",
    },
    "finetune": {
        "fig1_training.png": "finetune:fig1_training",
        "fig1_scatter.png": "finetune:fig1_scatter",
        "rank_correlations.md": "finetune:rank_correlation_table",
        "selection.md": "finetune:selection_table",
        "selection_sensitivity.md": "finetune:selection_sensitivity",
        "fig1_checks.md": "finetune:fig1_checks",
        "pretrain_check.md": "finetune:pretrain_check",
    },
    "interventions": {
        "horizon_sweep.png": "interventions:horizon_sweep",
        "rate_sweep.png": "interventions:rate_sweep",
        "interventions_table.md": "interventions:interventions_table",
    },
    "rate": {"rate_sweep.png": "interventions:rate_sweep", "rate_table.md": "interventions:rate_table"},
    "hard_instance": {
        "hard_instance.png": "hard_instance:hard_instance",
        "horizon_sweep.png": "interventions:horizon_sweep",
        "interventions_table.md": "interventions:interventions_table",
    },
    "lower_bound": {"lower_bound.md": "lower_bound:lower_bound_table"},
}

# {file name: "module:function"} over every set; a file in two sets is drawn by one function
DRAW = {name: draw for figures in FIGURE_SETS.values() for name, draw in figures.items()}


def outputs(figure_sets) -> list[str]:
    """File names (under figures/) that the given figure sets produce, in set order, without duplicates."""
    names = []
    for fs in figure_sets:
        names += [n for n in FIGURE_SETS[fs] if n not in names]
    return names


def draw_function(name: str):
    """The function that draws the file called `name` (imports its module, and with it pyplot)."""
    module, _, function = DRAW[name].partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def run(metrics_path, out_paths, spec: dict, selection_path=None) -> None:
    """Draw each file of out_paths (its file name says which figure) from the study's metrics table
    and, where given, its selection table."""
    from .common import set_theme

    set_theme()
    metrics = io.read_parquet(metrics_path)
    selection = io.read_parquet(selection_path) if selection_path else None
    for name, path in {str(path).rsplit("/", 1)[-1]: path for path in out_paths}.items():
        draw_function(name)(metrics, path, spec, selection)
