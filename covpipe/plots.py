"""Figures of one study, drawn from its aggregated metrics table only (Agg backend, PNG).

A study lists the figure sets it wants (`figures:` in its config):
"horizon":
    kl_vs_horizon        final sequence KL (nats) against H, one line per model class, seed band
    coverage_vs_horizon  final Cov_N against H for a few levels N, one line per model class
    coverage_profile     final Cov_N against N, one panel per model class, one line per H
    training_curves      KL (nats) over training steps, one panel per gradient-trained class
"training" (the paper's Figure 2 layout):
    over_training        three panels over training steps: sequence KL, Cov_16, KL / Cov_16, one
                         line per H for the trained class; dashed lines: reference models
    coverage_profile     as above
    per_class.md         final KL, Cov_16 and token accuracy per class and H (median [min, max])
"finetune" (the paper's Figure 1 layout and selection tables): see covpipe.plots_finetune.
Lines are medians over seeds; bands span the seeds (min to max; the 1/16..15/16 quantiles in
over_training, as in the paper).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402
import seaborn as sns  # noqa: E402

from . import io  # noqa: E402

VERSION = 5
FIGURE_SETS = {
    "horizon": ("kl_vs_horizon.png", "coverage_vs_horizon.png", "coverage_profile.png", "training_curves.png"),
    "training": ("over_training.png", "coverage_profile.png", "per_class.md"),
    "finetune": ("fig1_training.png", "fig1_scatter.png", "rank_correlations.md", "selection.md",
                 "pretrain_check.md"),
}
FIGURES = tuple(name.removesuffix(".png") for name in FIGURE_SETS["horizon"])
BAND = ("pi", 100)  # the full range over seeds
QUANTILE_BAND = ("pi", 100 * 14 / 16)  # from the 1/16 to the 15/16 quantile across seeds


def outputs(figure_sets) -> list[str]:
    """File names (under figures/) that the given figure sets produce, without duplicates."""
    names = []
    for fs in figure_sets:
        names += [n for n in FIGURE_SETS[fs] if n not in names]
    return names


def last_checkpoint(metrics: pl.DataFrame) -> pl.DataFrame:
    """Rows of each (model, horizon, seed)'s last checkpoint, every class."""
    last = metrics.group_by("model", "horizon", "seed").agg(pl.col("step").max().alias("last"))
    return metrics.join(last, on=["model", "horizon", "seed"]).filter(pl.col("step") == pl.col("last")).drop("last")


def final_rows(metrics: pl.DataFrame) -> pl.DataFrame:
    """Mixture ("all") rows at each (model, horizon, seed)'s last checkpoint."""
    return last_checkpoint(metrics).filter(pl.col("class") == "all")


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


def run(metrics_path, train_log_path, out_paths, spec: dict, selection_path=None) -> None:
    sns.set_theme(style="whitegrid", context="notebook")
    metrics = io.read_parquet(metrics_path)
    outs = {str(path).rsplit("/", 1)[-1]: path for path in out_paths}
    for name, path in outs.items():
        if name in FINETUNE_DRAW:  # these also mark the selection stage's picks
            FINETUNE_DRAW[name](metrics, path, spec, io.read_parquet(selection_path) if selection_path else None)
        else:
            DRAW[name](metrics, path, spec)


def _study(metrics):
    return metrics["study"][0]


def kl_vs_horizon(metrics, path, spec):
    study, final = _study(metrics), final_rows(metrics).to_pandas()

    fig, ax = plt.subplots(figsize=(6, 4))
    kl = final[final.metric == "kl"]
    sns.lineplot(kl, x="horizon", y="value", hue="model", estimator="median", errorbar=BAND, marker="o", ax=ax)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=0.1)  # KL spans 0 to tens of nats; estimates near 0 may dip below it
    ax.set(xlabel="horizon H (tokens)", ylabel="sequence KL (nats)", title=f"{study}: sequence KL against H")
    ax.set_xticks(sorted(kl.horizon.unique()), labels=[str(h) for h in sorted(kl.horizon.unique())])
    _save(fig, path)


def coverage_vs_horizon(metrics, path, spec):
    study, final = _study(metrics), final_rows(metrics).to_pandas()
    levels = shown_levels(spec["evaluate"]["levels"])
    cov = final[(final.metric == "coverage") & final.level.isin(levels)].copy()
    cov["N"] = cov.level.map(lambda v: f"{v:g}")
    grid = sns.relplot(cov, x="horizon", y="value", hue="model", col="N", kind="line", estimator="median",
                       errorbar=BAND, marker="o", height=3.2, aspect=1.0)
    grid.set(xscale="log", ylim=(-0.02, 1.02), xlabel="horizon H", ylabel="Cov_N (lower is better)")
    grid.figure.suptitle(f"{study}: coverage Cov_N against H", y=1.03)
    _save(grid.figure, path)


def coverage_profile(metrics, path, spec):
    study, final = _study(metrics), final_rows(metrics).to_pandas()
    prof = final[final.metric == "coverage"]
    grid = sns.relplot(prof, x="level", y="value", hue="horizon", col="model", kind="line", estimator="median",
                       errorbar=BAND, palette="viridis", height=3.2, aspect=1.0, col_wrap=min(4, prof.model.nunique()))
    grid.set(xscale="log", ylim=(-0.02, 1.02), xlabel="N", ylabel="Cov_N")
    grid.figure.suptitle(f"{study}: coverage profile at the end of training", y=1.03)
    _save(grid.figure, path)


def training_curves(metrics, path, spec):
    study = _study(metrics)
    curves = metrics.filter((pl.col("class") == "all") & (pl.col("metric") == "kl")).to_pandas()
    multi = curves.groupby("model").step.nunique()
    curves = curves[curves.model.isin(multi[multi > 1].index)]
    if curves.empty:
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.text(0.5, 0.5, "no gradient-trained model in this study", ha="center", va="center")
        ax.set_axis_off()
        _save(fig, path)
    else:
        grid = sns.relplot(curves, x="step", y="value", hue="horizon", col="model", kind="line", estimator="median",
                           errorbar=BAND, palette="viridis", height=3.2, aspect=1.1, facet_kws={"sharey": False})
        grid.set(xscale="log", yscale="symlog", xlabel="training step", ylabel="held-out sequence KL (nats)")
        grid.figure.suptitle(f"{study}: KL over training", y=1.03)
        _save(grid.figure, path)


def focus_level(spec) -> float:
    """The coverage level of the paper's Figure 2 (N = 16), or the grid's middle level."""
    levels = sorted(spec["evaluate"]["levels"])
    return 16.0 if 16 in levels else levels[len(levels) // 2]


def _trained_and_references(metrics):
    steps = metrics.group_by("model").agg(pl.col("step").n_unique().alias("k"))
    trained = steps.filter(pl.col("k") > 1)["model"].to_list()
    return trained, [m for m in steps["model"].to_list() if m not in trained]


def over_training(metrics, path, spec):
    study, level = _study(metrics), focus_level(spec)
    trained, references = _trained_and_references(metrics)
    mix = metrics.filter(pl.col("class") == "all")
    kl = mix.filter(pl.col("metric") == "kl").select("model", "horizon", "seed", "step", pl.col("value").alias("kl"))
    cov = mix.filter((pl.col("metric") == "coverage") & (pl.col("level") == level)).select(
        "model", "horizon", "seed", "step", pl.col("value").alias("cov"))
    both = kl.join(cov, on=["model", "horizon", "seed", "step"]).with_columns(
        ratio=pl.when(pl.col("cov") > 0).then(pl.col("kl") / pl.col("cov")).otherwise(None)).to_pandas()
    horizons = sorted(both.horizon.unique())
    palette = dict(zip(horizons, sns.color_palette("viridis", len(horizons))))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = [("kl", "sequence KL (nats)"), ("cov", f"Cov_{level:g}"), ("ratio", f"KL / Cov_{level:g}")]
    curves = both[both.model.isin(trained)]
    for ax, (col, label) in zip(axes, panels):
        sns.lineplot(curves.dropna(subset=[col]), x="step", y=col, hue="horizon", style="model" if len(trained) > 1 else None,
                     estimator="median", errorbar=QUANTILE_BAND, palette=palette, ax=ax)
        for ref, dash in zip(references, ["--", ":", "-."]):
            final = both[(both.model == ref)].groupby("horizon")[col].median()
            for h, v in final.items():
                if v == v:  # not NaN
                    ax.axhline(v, color=palette[h], linestyle=dash, linewidth=1)
            ax.plot([], [], color="grey", linestyle=dash, label=f"{ref} (reference)")
        ax.set(xlabel="training step", ylabel=label)
        ax.legend(fontsize=8, title="H")
    axes[0].set_yscale("log")  # KL falls by orders of magnitude early in training
    axes[2].set_yscale("log")
    axes[1].set_ylim(-0.02, 1.02)
    fig.suptitle(f"{study}: {', '.join(trained)} over training; median over seeds, band = 1/16..15/16 quantiles")
    _save(fig, path)


def per_class_table(metrics, path, spec):
    level = focus_level(spec)
    picked = last_checkpoint(metrics).filter(pl.col("metric").is_in(["kl", "token_accuracy"]) |
                          ((pl.col("metric") == "coverage") & (pl.col("level") == level)))
    table = picked.group_by("model", "horizon", "class", "metric").agg(
        pl.col("value").median().alias("med"), pl.col("value").min().alias("lo"), pl.col("value").max().alias("hi"))
    cell = {(r["model"], r["horizon"], r["class"], r["metric"]): f"{r['med']:.3g} [{r['lo']:.3g}, {r['hi']:.3g}]"
            for r in table.iter_rows(named=True)}
    keys = sorted({k[:3] for k in cell})
    lines = [f"| model | H | class | KL (nats) | Cov_{level:g} | token accuracy |", "|---|---|---|---|---|---|"]
    lines += [f"| {m} | {h} | {c} | {cell.get((m, h, c, 'kl'), '')} | {cell.get((m, h, c, 'coverage'), '')} | "
              f"{cell.get((m, h, c, 'token_accuracy'), '')} |" for m, h, c in keys]
    with io.atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


DRAW = {
    "kl_vs_horizon.png": kl_vs_horizon,
    "coverage_vs_horizon.png": coverage_vs_horizon,
    "coverage_profile.png": coverage_profile,
    "training_curves.png": training_curves,
    "over_training.png": over_training,
    "per_class.md": per_class_table,
}

from .plots_finetune import DRAW as FINETUNE_DRAW  # noqa: E402  (it uses the helpers above)

DRAW.update(FINETUNE_DRAW)
