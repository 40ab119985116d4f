"""The "horizon" figure set: final KL and coverage against the horizon H, the coverage profile, and
KL over training. Lines are medians over seeds, bands span the seeds (min to max).

kl_vs_horizon.png        final sequence KL (nats) against H, one line per model class
coverage_vs_horizon.png  final Cov_N against H for a few levels N, one line per model class
coverage_profile.png     final Cov_N against N, one panel per model class, one line per H
training_curves.png      KL (nats) over training steps, one panel per gradient-trained class
"""

from __future__ import annotations

import polars as pl

from .common import BAND, final_rows, plt, save, shown_levels, sns, study_of


def kl_vs_horizon(metrics, path, spec, selection=None):
    study, final = study_of(metrics), final_rows(metrics).to_pandas()

    fig, ax = plt.subplots(figsize=(6, 4))
    kl = final[final.metric == "kl"]
    sns.lineplot(kl, x="horizon", y="value", hue="model", estimator="median", errorbar=BAND, marker="o", ax=ax)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=0.1)  # KL spans 0 to tens of nats; estimates near 0 may dip below it
    ax.set(xlabel="horizon H (tokens)", ylabel="sequence KL (nats)", title=f"{study}: sequence KL against H")
    ax.set_xticks(sorted(kl.horizon.unique()), labels=[str(h) for h in sorted(kl.horizon.unique())])
    save(fig, path)


def _panels(frame, path, title, *, xlabel, ylabel, xscale="log", ylim=None, yscale=None, **layout):
    """Median lines over seeds (band = range) of `value`, one panel per value of `col`, saved to path."""
    grid = sns.relplot(frame, y="value", kind="line", estimator="median", errorbar=BAND, height=3.2, **layout)
    y_axis = {"ylim": ylim} if ylim is not None else {"yscale": yscale}
    grid.set(xscale=xscale, **y_axis, xlabel=xlabel, ylabel=ylabel)
    grid.figure.suptitle(title, y=1.03)
    save(grid.figure, path)


def coverage_vs_horizon(metrics, path, spec, selection=None):
    study, final = study_of(metrics), final_rows(metrics).to_pandas()
    levels = shown_levels(spec["evaluate"]["levels"])
    cov = final[(final.metric == "coverage") & final.level.isin(levels)].copy()
    cov["N"] = cov.level.map(lambda v: f"{v:g}")
    _panels(
        cov,
        path,
        f"{study}: coverage Cov_N against H",
        x="horizon",
        hue="model",
        col="N",
        marker="o",
        aspect=1.0,
        ylim=(-0.02, 1.02),
        xlabel="horizon H",
        ylabel="Cov_N (lower is better)",
    )


def coverage_profile(metrics, path, spec, selection=None):
    study, final = study_of(metrics), final_rows(metrics).to_pandas()
    prof = final[final.metric == "coverage"]
    _panels(
        prof,
        path,
        f"{study}: coverage profile at the end of training",
        x="level",
        hue="horizon",
        col="model",
        palette="viridis",
        aspect=1.0,
        col_wrap=min(4, prof.model.nunique()),
        ylim=(-0.02, 1.02),
        xlabel="N",
        ylabel="Cov_N",
    )


def training_curves(metrics, path, spec, selection=None):
    study = study_of(metrics)
    curves = metrics.filter((pl.col("class") == "all") & (pl.col("metric") == "kl")).to_pandas()
    multi = curves.groupby("model").step.nunique()
    curves = curves[curves.model.isin(multi[multi > 1].index)]
    if curves.empty:
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.text(0.5, 0.5, "no gradient-trained model in this study", ha="center", va="center")
        ax.set_axis_off()
        save(fig, path)
    else:
        _panels(
            curves,
            path,
            f"{study}: KL over training",
            x="step",
            hue="horizon",
            col="model",
            palette="viridis",
            aspect=1.1,
            facet_kws={"sharey": False},
            yscale="symlog",
            xlabel="training step",
            ylabel="held-out sequence KL (nats)",
        )
