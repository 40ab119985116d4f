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
"interventions" (learners, paper Secs. 5-6; `config/interventions.yaml`):
    horizon_sweep        final KL and Cov_N (a few N) against H, one line per model (learner; '+ttt'
                         marks the test-time-training decoder), sigma*^2 of the teacher under each H
    rate_sweep           Cov_N against the sample size T (checkpoints, in sequences) on log-log axes at
                         the smallest and largest H, with the paper's slopes -1/2 and -1 drawn
    interventions_table.md  per model: KL and Cov_N at the smallest and largest H, their ratio and
                         the log-log slope against H (median over seeds)
"hard_instance" (teachers kl_lower_bound, sgd_two_scales):
    hard_instance        fraction of seeds with KL >= H/(4n) against H (Prop. 3.2), KL n/H per seed,
                         and Cov_N, one line per model; plus horizon_sweep and interventions_table.md
Lines are medians over seeds; bands span the seeds (min to max; the 1/16..15/16 quantiles in
over_training, as in the paper).
"""

from __future__ import annotations

import importlib

import polars as pl

from . import io


class _OnFirstUse:
    """A module imported when first used: the Snakefile reads this module's registry to plan every
    run, and importing seaborn (scipy.stats) and pyplot costs 1 to 5 s that a dry run never needs."""

    def __init__(self, name: str):
        self._name, self._module = name, None

    def __getattr__(self, attr):
        if self._module is None:
            importlib.import_module("matplotlib").use("Agg")
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


plt = _OnFirstUse("matplotlib.pyplot")
sns = _OnFirstUse("seaborn")

VERSION = 7
FIGURE_SETS = {
    "horizon": ("kl_vs_horizon.png", "coverage_vs_horizon.png", "coverage_profile.png", "training_curves.png"),
    "training": ("over_training.png", "coverage_profile.png", "per_class.md"),
    "finetune": ("fig1_training.png", "fig1_scatter.png", "rank_correlations.md", "selection.md",
                 "selection_sensitivity.md", "fig1_checks.md", "pretrain_check.md"),
    "interventions": ("horizon_sweep.png", "rate_sweep.png", "interventions_table.md"),
    "hard_instance": ("hard_instance.png", "horizon_sweep.png", "interventions_table.md"),
}
FIGURE_SETS["lower_bound"] = ("lower_bound.md",)  # paper Prop. 5.1 on App. I.4's instances: covpipe.plots_lowerbound
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


def run(metrics_path, out_paths, spec: dict, selection_path=None) -> None:
    """Draw each figure of out_paths from the study's metrics table (and its selection table)."""
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


# ---- interventions (learners) -------------------------------------------------------------------


def _sigma_by_horizon(metrics) -> dict:
    """sigma*^2 of the teacher at each H (mixture class), from the metrics table."""
    rows = metrics.filter((pl.col("metric") == "sigma_star_sq") & (pl.col("class") == "all"))
    return {h: v for h, v in rows.group_by("horizon").agg(pl.col("value").median()).iter_rows()}


def _horizon_ticks(ax, horizons, sigma):
    ax.set_xscale("log")
    ax.set_xticks(horizons, labels=[f"{h}" + (f"\n{sigma[h]:.3g}" if h in sigma else "") for h in horizons])
    ax.minorticks_off()


def horizon_sweep(metrics, path, spec):
    """Final KL and Cov_N against H, one line per model; the x labels carry sigma*^2 under H."""
    study, final = _study(metrics), final_rows(metrics).to_pandas()
    sigma = _sigma_by_horizon(metrics)
    levels = shown_levels(spec["evaluate"]["levels"])
    horizons = sorted(final.horizon.unique())
    models = sorted(final.model.unique())
    palette = dict(zip(models, sns.color_palette("tab10", len(models))))
    fig, axes = plt.subplots(1, 1 + len(levels), figsize=(4.2 * (1 + len(levels)), 4.2))
    kl = final[final.metric == "kl"]
    sns.lineplot(kl, x="horizon", y="value", hue="model", estimator="median", errorbar=BAND, marker="o",
                 palette=palette, ax=axes[0], legend=False)
    axes[0].set_yscale("log")
    axes[0].set(ylabel="sequence KL (nats)", title="KL")
    for ax, level in zip(axes[1:], levels):
        cov = final[(final.metric == "coverage") & (final.level == level)]
        sns.lineplot(cov, x="horizon", y="value", hue="model", estimator="median", errorbar=BAND, marker="o",
                     palette=palette, ax=ax, legend=ax is axes[-1])
        ax.set(ylim=(-0.02, 1.02), ylabel="Cov_N (lower is better)", title=f"Cov_N, N = {level:g}")
    for ax in axes:
        _horizon_ticks(ax, horizons, sigma)
        ax.set_xlabel("horizon H" + ("\n(sigma*^2 of the teacher)" if sigma else ""))
    axes[-1].legend(fontsize=8, title="model", bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle(f"{study}: final KL and coverage against H; median over seeds, band = range")
    _save(fig, path)


def rate_level(spec) -> float:
    """The coverage level of the rate sweep: the smallest N of the grid (the last to reach 0)."""
    return float(min(spec["evaluate"]["levels"]))


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y on log x over the points with y > 0 (nan with fewer than 2)."""
    import numpy as np

    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = (x > 0) & (y > 0)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def rate_sweep(metrics, path, spec):
    """Cov_N against the sample size T at the smallest and largest H, log-log, paper slopes drawn."""
    import numpy as np

    study, level = _study(metrics), rate_level(spec)
    cov = metrics.filter((pl.col("class") == "all") & (pl.col("metric") == "coverage") & (pl.col("level") == level))
    horizons = sorted(cov["horizon"].unique().to_list())
    shown = sorted({horizons[0], horizons[-1]})
    floor = 0.5 / cov["n"].max()  # Cov_N = 0 drawn at half the resolution of the held-out set
    models = sorted(cov["model"].unique().to_list())
    palette = dict(zip(models, sns.color_palette("tab10", len(models))))
    fig, axes = plt.subplots(1, len(shown), figsize=(6.5 * len(shown), 4.6), squeeze=False)
    for ax, h in zip(axes[0], shown):
        part = cov.filter(pl.col("horizon") == h).to_pandas()
        med = part.groupby(["model", "step"]).value.median().reset_index()
        for m in models:
            line = med[med.model == m].sort_values("step")
            if line.step.nunique() < 2:
                continue
            slope = loglog_slope(line.step, line.value)
            ax.plot(line.step, np.maximum(line.value, floor), marker="o", color=palette[m],
                    label=f"{m} (slope {slope:.2f})")
            band = part[part.model == m].groupby("step").value.agg(["min", "max"])
            ax.fill_between(band.index, np.maximum(band["min"], floor), np.maximum(band["max"], floor),
                            color=palette[m], alpha=0.12)
        steps = np.array(sorted(part.step.unique()), float)
        if len(steps) > 1:
            anchor = max(float(med[med.step == steps.min()].value.median()), 10 * floor)
            for slope, style in ((-0.5, "--"), (-1.0, ":")):
                ax.plot(steps, anchor * (steps / steps.min()) ** slope, color="black", linestyle=style, linewidth=1,
                        label=f"paper slope {slope:g}" + (" (sqrt(sigma*^2/T))" if slope == -0.5 else " (B^2 H/T, B^2/T)"))
        ax.set(xscale="log", yscale="log", xlabel="training sequences T", ylabel=f"Cov_N, N = {level:g}",
               title=f"H = {h}" + (f", sigma*^2 = {_sigma_by_horizon(metrics).get(h, float('nan')):.3g}"))
        ax.axhline(floor, color="grey", linewidth=0.5)
        ax.legend(fontsize=7)
    fig.suptitle(f"{study}: coverage against the sample size (median over seeds, band = range; "
                 f"Cov_N = 0 drawn at {floor:.2g})")
    _save(fig, path)


def hard_instance(metrics, path, spec):
    """Prop. 3.2's event KL >= H/(4n) across seeds, KL n/H, and Cov_N against H."""
    study, final = _study(metrics), final_rows(metrics).to_pandas()
    n = spec.get("n_train")
    level = focus_level(spec)
    kl = final[final.metric == "kl"].copy()
    kl["normalized"] = kl.value * n / kl.horizon
    kl["over"] = (kl.normalized >= 0.25).astype(float)
    kl["over8"] = (kl.normalized >= 0.125).astype(float)
    frac = kl.groupby(["model", "horizon"])[["over", "over8"]].mean().reset_index()
    models = sorted(kl.model.unique())
    palette = dict(zip(models, sns.color_palette("tab10", len(models))))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    for m in models:
        line = frac[frac.model == m].sort_values("horizon")
        axes[0].plot(line.horizon, line.over, marker="o", color=palette[m], label=f"{m}: KL >= H/(4n)")
        axes[0].plot(line.horizon, line.over8, marker="x", linestyle="--", color=palette[m], label=f"{m}: KL >= H/(8n)")
    axes[0].axhline(0.25, color="black", linestyle=":", linewidth=1, label="Prop. 3.2: probability >= 0.25")
    axes[0].set(ylim=(-0.02, 1.02), xlabel="horizon", ylabel="fraction of seeds",
                title=f"the KL lower bound (n = {n})")
    axes[0].legend(fontsize=8)
    sns.stripplot(kl, x="horizon", y="normalized", hue="model", dodge=True, palette=palette, ax=axes[1], size=4,
                  legend=False, native_scale=True)
    axes[1].axhline(0.25, color="black", linestyle=":", linewidth=1)
    axes[1].axhline(0.125, color="black", linestyle="--", linewidth=1)
    axes[1].set_yscale("symlog", linthresh=0.01)
    axes[1].set(ylabel="KL n / H (one dot per seed)", title="KL scaled by n/H; dotted 1/4, dashed 1/8")
    cov = final[(final.metric == "coverage") & (final.level == level)]
    sns.lineplot(cov, x="horizon", y="value", hue="model", estimator="median", errorbar=BAND, marker="o",
                 palette=palette, ax=axes[2])
    axes[2].set(ylim=(-0.02, 1.02), ylabel=f"Cov_{level:g}", title=f"Cov_N, N = {level:g} (median, band = range)")
    axes[2].legend(fontsize=8, title="model")
    for ax in (axes[0], axes[2]):
        ax.set_xscale("log")
    axes[1].set_xscale("log")
    fig.suptitle(f"{study}: {kl.seed.nunique()} seeds per cell")
    _save(fig, path)


def interventions_table(metrics, path, spec):
    """Markdown: per model, KL and Cov_N (smallest N and N = 16) at the smallest and largest H, the KL
    ratio, and log-log slopes against H (median over seeds, final checkpoint)."""
    final = final_rows(metrics)
    levels = sorted({rate_level(spec), focus_level(spec)})
    horizons = sorted(final["horizon"].unique().to_list())
    lo, hi = horizons[0], horizons[-1]
    sigma = _sigma_by_horizon(metrics)
    med = final.filter((pl.col("metric") == "kl") | ((pl.col("metric") == "coverage") & pl.col("level").is_in(levels))) \
        .group_by("model", "horizon", "metric", "level").agg(pl.col("value").median())
    cell = {(m, h, k if lv is None else f"{k}{lv:g}"): v for m, h, k, lv, v in med.iter_rows()}
    keys = ["kl"] + [f"coverage{lv:g}" for lv in levels]
    names = ["KL"] + [f"Cov_{lv:g}" for lv in levels]
    head = "| model | " + " | ".join(f"{n}, H={lo} | {n}, H={hi} | slope" for n in names) + " | KL ratio |"
    lines = ["sigma*^2 of the teacher: " + ", ".join(f"H={h}: {sigma[h]:.3g}" for h in horizons if h in sigma), "",
             head, "|---" * (2 + 3 * len(names)) + "|"]
    for m in sorted({k[0] for k in cell}):
        parts = []
        for key in keys:
            v = [cell.get((m, h, key), float("nan")) for h in horizons]
            parts.append(f"{v[0]:.3g} | {v[-1]:.3g} | {loglog_slope(horizons, v):.2f}")
        kl = [cell.get((m, h, "kl"), float("nan")) for h in horizons]
        ratio = kl[-1] / kl[0] if kl[0] > 0 else float("nan")
        lines.append(f"| {m} | " + " | ".join(parts) + f" | {ratio:.3g} |")
    lines += ["", "Final checkpoint, median over seeds. slope: least squares of log value on log H over the H "
                  f"with value > 0 ({', '.join(map(str, horizons))}); nan where fewer than two are > 0."]
    with io.atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


DRAW = {
    "kl_vs_horizon.png": kl_vs_horizon,
    "coverage_vs_horizon.png": coverage_vs_horizon,
    "coverage_profile.png": coverage_profile,
    "training_curves.png": training_curves,
    "over_training.png": over_training,
    "per_class.md": per_class_table,
    "horizon_sweep.png": horizon_sweep,
    "rate_sweep.png": rate_sweep,
    "interventions_table.md": interventions_table,
    "hard_instance.png": hard_instance,
}

from .plots_finetune import DRAW as FINETUNE_DRAW  # noqa: E402  (it uses the helpers above)

DRAW.update(FINETUNE_DRAW)
DRAW.update(importlib.import_module(".plots_lowerbound", __package__).DRAW)
