"""The "training" figure set (the paper's Figure 2 layout), with coverage_profile.png of the
"horizon" set:

over_training.png  three panels over training steps: sequence KL (nats), Cov_16 and KL / Cov_16, one
                   line per H for the trained class (median over seeds, band from the 1/16 to the
                   15/16 quantile across seeds, as in the paper); dashed lines: reference models
per_class.md       final KL, Cov_16 and token accuracy per class and H (median [min, max] over seeds)
"""

from __future__ import annotations

import polars as pl

from .common import QUANTILE_BAND, focus_level, last_checkpoint, plt, save, sns, study_of, write_lines


def _trained_and_references(metrics):
    # sorted: group_by's order varies run to run, and it picks each reference's line style
    steps = metrics.group_by("model").agg(pl.col("step").n_unique().alias("k")).sort("model")
    trained = steps.filter(pl.col("k") > 1)["model"].to_list()
    return trained, [m for m in steps["model"].to_list() if m not in trained]


def over_training(metrics, path, spec, selection=None):
    study, level = study_of(metrics), focus_level(spec)
    trained, references = _trained_and_references(metrics)
    mix = metrics.filter(pl.col("class") == "all")
    kl = mix.filter(pl.col("metric") == "kl").select("model", "horizon", "seed", "step", pl.col("value").alias("kl"))
    cov = mix.filter((pl.col("metric") == "coverage") & (pl.col("level") == level)).select(
        "model", "horizon", "seed", "step", pl.col("value").alias("cov")
    )
    both = (
        kl.join(cov, on=["model", "horizon", "seed", "step"])
        .with_columns(ratio=pl.when(pl.col("cov") > 0).then(pl.col("kl") / pl.col("cov")).otherwise(None))
        .to_pandas()
    )
    horizons = sorted(both.horizon.unique())
    palette = dict(zip(horizons, sns.color_palette("viridis", len(horizons))))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = [("kl", "sequence KL (nats)"), ("cov", f"Cov_{level:g}"), ("ratio", f"KL / Cov_{level:g}")]
    curves = both[both.model.isin(trained)]
    for ax, (col, label) in zip(axes, panels):
        sns.lineplot(
            curves.dropna(subset=[col]),
            x="step",
            y=col,
            hue="horizon",
            style="model" if len(trained) > 1 else None,
            estimator="median",
            errorbar=QUANTILE_BAND,
            palette=palette,
            ax=ax,
        )
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
    save(fig, path)


def per_class_table(metrics, path, spec, selection=None):
    level = focus_level(spec)
    picked = last_checkpoint(metrics).filter(
        pl.col("metric").is_in(["kl", "token_accuracy"])
        | ((pl.col("metric") == "coverage") & (pl.col("level") == level))
    )
    table = picked.group_by("model", "horizon", "class", "metric").agg(
        pl.col("value").median().alias("med"), pl.col("value").min().alias("lo"), pl.col("value").max().alias("hi")
    )
    cell = {
        (r["model"], r["horizon"], r["class"], r["metric"]): f"{r['med']:.3g} [{r['lo']:.3g}, {r['hi']:.3g}]"
        for r in table.iter_rows(named=True)
    }
    keys = sorted({k[:3] for k in cell})
    lines = [f"| model | H | class | KL (nats) | Cov_{level:g} | token accuracy |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {m} | {h} | {c} | {cell.get((m, h, c, 'kl'), '')} | {cell.get((m, h, c, 'coverage'), '')} | "
        f"{cell.get((m, h, c, 'token_accuracy'), '')} |"
        for m, h, c in keys
    ]
    write_lines(path, lines)
