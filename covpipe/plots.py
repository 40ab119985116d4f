"""Figures of one study, drawn from its aggregated metrics table only (Agg backend, PNG).

kl_vs_horizon        final sequence KL (nats) against H, one line per model class, seed band
coverage_vs_horizon  final Cov_N against H for a few levels N, one line per model class
coverage_profile     final Cov_N against N, one panel per model class, one line per H
training_curves      KL (nats) over training steps, one panel per gradient-trained class
Lines are medians over seeds; bands span the seeds (min to max).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402
import seaborn as sns  # noqa: E402

from . import io  # noqa: E402

VERSION = 1
FIGURES = ("kl_vs_horizon", "coverage_vs_horizon", "coverage_profile", "training_curves")
BAND = ("pi", 100)  # the full range over seeds


def final_rows(metrics: pl.DataFrame) -> pl.DataFrame:
    """Mixture ("all") rows at each (model, horizon, seed)'s last checkpoint."""
    last = metrics.group_by("model", "horizon", "seed").agg(pl.col("step").max().alias("last"))
    return metrics.join(last, on=["model", "horizon", "seed"]).filter(
        (pl.col("step") == pl.col("last")) & (pl.col("class") == "all")).drop("last")


def shown_levels(levels, k: int = 3) -> list[float]:
    """Up to k levels spread over the grid (smallest, middle, largest)."""
    levels = sorted(levels)
    if len(levels) <= k:
        return levels
    return [levels[round(i * (len(levels) - 1) / (k - 1))] for i in range(k)]


def _save(fig, path):
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def run(metrics_path, train_log_path, out_paths, spec: dict) -> None:
    sns.set_theme(style="whitegrid", context="notebook")
    metrics = io.read_parquet(metrics_path)
    study = metrics["study"][0]
    final = final_rows(metrics).to_pandas()
    outs = {name: path for name, path in zip(FIGURES, out_paths)}

    fig, ax = plt.subplots(figsize=(6, 4))
    kl = final[final.metric == "kl"]
    sns.lineplot(kl, x="horizon", y="value", hue="model", estimator="median", errorbar=BAND, marker="o", ax=ax)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=0.1)  # KL spans 0 to tens of nats; estimates near 0 may dip below it
    ax.set(xlabel="horizon H (tokens)", ylabel="sequence KL (nats)", title=f"{study}: sequence KL against H")
    ax.set_xticks(sorted(kl.horizon.unique()), labels=[str(h) for h in sorted(kl.horizon.unique())])
    _save(fig, outs["kl_vs_horizon"])

    levels = shown_levels(spec["evaluate"]["levels"])
    cov = final[(final.metric == "coverage") & final.level.isin(levels)].copy()
    cov["N"] = cov.level.map(lambda v: f"N={v:g}")
    grid = sns.relplot(cov, x="horizon", y="value", hue="model", col="N", kind="line", estimator="median",
                       errorbar=BAND, marker="o", height=3.2, aspect=1.0)
    grid.set(xscale="log", ylim=(-0.02, 1.02), xlabel="horizon H", ylabel="Cov_N (lower is better)")
    grid.figure.suptitle(f"{study}: coverage Cov_N against H", y=1.03)
    _save(grid.figure, outs["coverage_vs_horizon"])

    prof = final[final.metric == "coverage"]
    grid = sns.relplot(prof, x="level", y="value", hue="horizon", col="model", kind="line", estimator="median",
                       errorbar=BAND, palette="viridis", height=3.2, aspect=1.0, col_wrap=min(4, prof.model.nunique()))
    grid.set(xscale="log", ylim=(-0.02, 1.02), xlabel="N", ylabel="Cov_N")
    grid.figure.suptitle(f"{study}: coverage profile at the end of training", y=1.03)
    _save(grid.figure, outs["coverage_profile"])

    curves = metrics.filter((pl.col("class") == "all") & (pl.col("metric") == "kl")).to_pandas()
    multi = curves.groupby("model").step.nunique()
    curves = curves[curves.model.isin(multi[multi > 1].index)]
    if curves.empty:
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.text(0.5, 0.5, "no gradient-trained model in this study", ha="center", va="center")
        ax.set_axis_off()
        _save(fig, outs["training_curves"])
    else:
        grid = sns.relplot(curves, x="step", y="value", hue="horizon", col="model", kind="line", estimator="median",
                           errorbar=BAND, palette="viridis", height=3.2, aspect=1.1, facet_kws={"sharey": False})
        grid.set(xscale="log", yscale="symlog", xlabel="training step", ylabel="held-out sequence KL (nats)")
        grid.figure.suptitle(f"{study}: KL over training", y=1.03)
        _save(grid.figure, outs["training_curves"])
