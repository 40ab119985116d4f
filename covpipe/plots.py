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
    horizon_sweep        final KL and Cov_N (a few N) against H, one line per learner ('+ttt' marks the
                         test-time-training decoder), a row per iterate (last, '+avg' average); sigma*^2
                         of the teacher under each H
    rate_sweep           KL and Cov_N against the sample size T (checkpoints, in sequences) on log-log
                         axes at the largest H, a column per iterate, the paper's slopes -1/2 and -1 drawn
    interventions_table.md  per learner and iterate: KL and Cov_N at the smallest and largest H and the
                         per-seed log-log slopes against H and against sigma*^2 (median [min, max])
"rate" (the sample-size sweep): rate_sweep as above, and
    rate_table.md        per learner and iterate: the smallest T at which it learns (KL <= a tenth of the
                         initial model's, step 0), final KL and Cov_N, slopes in T beside the theory's
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

FIGURE_SETS = {
    "horizon": ("kl_vs_horizon.png", "coverage_vs_horizon.png", "coverage_profile.png", "training_curves.png"),
    "training": ("over_training.png", "coverage_profile.png", "per_class.md"),
    "finetune": (
        "fig1_training.png",
        "fig1_scatter.png",
        "rank_correlations.md",
        "selection.md",
        "selection_sensitivity.md",
        "fig1_checks.md",
        "pretrain_check.md",
    ),
    "interventions": ("horizon_sweep.png", "rate_sweep.png", "interventions_table.md"),
    "rate": ("rate_sweep.png", "rate_table.md"),
    "hard_instance": ("hard_instance.png", "horizon_sweep.png", "interventions_table.md"),
}
FIGURE_SETS["lower_bound"] = ("lower_bound.md",)  # paper Prop. 5.1 on App. I.4's instances: covpipe.plots_lowerbound
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
    grid = sns.relplot(
        cov,
        x="horizon",
        y="value",
        hue="model",
        col="N",
        kind="line",
        estimator="median",
        errorbar=BAND,
        marker="o",
        height=3.2,
        aspect=1.0,
    )
    grid.set(xscale="log", ylim=(-0.02, 1.02), xlabel="horizon H", ylabel="Cov_N (lower is better)")
    grid.figure.suptitle(f"{study}: coverage Cov_N against H", y=1.03)
    _save(grid.figure, path)


def coverage_profile(metrics, path, spec):
    study, final = _study(metrics), final_rows(metrics).to_pandas()
    prof = final[final.metric == "coverage"]
    grid = sns.relplot(
        prof,
        x="level",
        y="value",
        hue="horizon",
        col="model",
        kind="line",
        estimator="median",
        errorbar=BAND,
        palette="viridis",
        height=3.2,
        aspect=1.0,
        col_wrap=min(4, prof.model.nunique()),
    )
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
        grid = sns.relplot(
            curves,
            x="step",
            y="value",
            hue="horizon",
            col="model",
            kind="line",
            estimator="median",
            errorbar=BAND,
            palette="viridis",
            height=3.2,
            aspect=1.1,
            facet_kws={"sharey": False},
        )
        grid.set(xscale="log", yscale="symlog", xlabel="training step", ylabel="held-out sequence KL (nats)")
        grid.figure.suptitle(f"{study}: KL over training", y=1.03)
        _save(grid.figure, path)


def focus_level(spec) -> float:
    """The coverage level of the paper's Figure 2 (N = 16), or the grid's middle level."""
    levels = sorted(spec["evaluate"]["levels"])
    return 16.0 if 16 in levels else levels[len(levels) // 2]


def _trained_and_references(metrics):
    # sorted: group_by's order varies run to run, and it picks each reference's line style
    steps = metrics.group_by("model").agg(pl.col("step").n_unique().alias("k")).sort("model")
    trained = steps.filter(pl.col("k") > 1)["model"].to_list()
    return trained, [m for m in steps["model"].to_list() if m not in trained]


def over_training(metrics, path, spec):
    study, level = _study(metrics), focus_level(spec)
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
    _save(fig, path)


def per_class_table(metrics, path, spec):
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


def kl_metric(metrics) -> str:
    """The KL the interventions figures read: prefix_kl (exact per prefix, >= 0, low variance) where the
    table has it, else kl (the mean log-ratio; older tables)."""
    return "prefix_kl" if (metrics["metric"] == "prefix_kl").any() else "kl"


AVG = "+avg"  # the average-iterate variant of a learner-trained model (covpipe.learners.variants)


def iterate_of(model: str) -> tuple[str, str]:
    """(the model it varies, 'last' or 'average'): 'tok+avg+ttt' -> ('tok+ttt', 'average')."""
    return (model.replace(AVG, ""), "average") if AVG in model else (model, "last")


def _palette(models) -> dict:
    bases = sorted({iterate_of(m)[0] for m in models})
    return dict(zip(bases, sns.color_palette("tab10" if len(bases) <= 10 else "tab20", len(bases))))


def _outside_legend(fig, axes, title="model"):
    """One legend for the figure, right of the panels: it never covers data."""
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    fig.legend(
        [handles[lab] for lab in labels],
        labels,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize=8,
        title=title,
        frameon=False,
    )


def _log2_axis(ax, values):
    """x on a log2 axis, one label every other power of 2 (2^5, 2^7, ...) so labels never collide."""
    import numpy as np
    from matplotlib.ticker import FixedLocator, NullLocator

    powers = sorted({int(round(np.log2(v))) for v in values if v > 0})
    if not powers:
        return
    ax.set_xscale("log", base=2)
    step = 1 if len(powers) <= 7 else 2
    shown = powers[::step]
    ax.xaxis.set_major_locator(FixedLocator([2.0**p for p in shown]))
    ax.set_xticklabels([f"$2^{{{p}}}$" for p in shown])
    ax.xaxis.set_minor_locator(NullLocator())


def horizon_sweep(metrics, path, spec):
    """Final KL and Cov_N against H: one row per iterate (last, average), one line per learner; the
    x labels carry sigma*^2 under H."""

    study, final = _study(metrics), final_rows(metrics).to_pandas()
    final = final[final.step > 0]
    final["base"], final["iterate"] = zip(*final.model.map(iterate_of))
    sigma = _sigma_by_horizon(metrics)
    levels = shown_levels(spec["evaluate"]["levels"])
    horizons = sorted(final.horizon.unique())
    palette = _palette(final.model.unique())
    floor = 0.5 / final["n"].max()  # Cov_N = 0 (and KL <= 0) drawn at half the resolution of the held-out set
    kinds = [k for k in ("last", "average") if (final.iterate == k).any()]
    fig, axes = plt.subplots(
        len(kinds), 1 + len(levels), figsize=(4.0 * (1 + len(levels)), 3.9 * len(kinds)), squeeze=False
    )
    for row, kind in zip(axes, kinds):
        part = final[final.iterate == kind]
        if kind == "average":  # models without iterates (the exact MLE) as the reference in both rows
            part = pd_concat(part, final[(final.iterate == "last") & ~final.base.isin(part.base)])
        for ax, (metric, level) in zip(row, [(kl_metric(metrics), None)] + [("coverage", lv) for lv in levels]):
            cell = part[(part.metric == metric) & ((part.level == level) if level is not None else True)]
            for base, line in cell.groupby("base"):
                med = line.groupby("horizon").value.agg(["median", "min", "max"])
                med = med.clip(lower=floor if metric == "coverage" else 1e-12)  # log axes
                dashed = kind == "average" and not (line.iterate == "average").any()
                ax.plot(
                    med.index,
                    med["median"],
                    marker="o",
                    color=palette[base],
                    label=base,
                    linestyle=":" if dashed else "-",
                )
                ax.fill_between(med.index, med["min"], med["max"], color=palette[base], alpha=0.1)
            if metric != "coverage":
                ax.set_yscale("log")
                ax.set(ylabel=f"{kind} iterate\nsequence KL (nats)", title="KL")
            else:  # log: the learners that cover differ by orders of magnitude near 0
                ax.set_yscale("log")
                ax.set(ylim=(floor / 2, 1.5), ylabel="Cov_N (lower is better)", title=f"Cov_N, N = {level:g}")
                ax.axhline(floor, color="grey", linewidth=0.5)
            _horizon_ticks(ax, horizons, sigma)
            ax.set_xlabel("horizon H" + ("\n(sigma*^2 of the teacher)" if sigma else ""))
    _outside_legend(fig, axes.ravel())
    fig.suptitle(
        f"{study}: final KL and coverage against H (T = {int(final.step.max())} sequences); median over "
        f"seeds, band = range; 0 drawn at {floor:.2g}; dotted in the average row: no iterates (exact MLE)"
    )
    fig.tight_layout()
    _save(fig, path)


def pd_concat(*frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


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


# The theory's slope in T of each learner's bound (paper-notes Secs. 3-4), as "slope at small T ->
# slope at large T": the B^2/T-type term dominates until T ~ B^4/sigma*^2, the sqrt(sigma*^2/T) term after.
THEORY_SLOPE = {
    "mle_exact": "-1 (d/n, Cor. 4.1)",
    "seq_sgd": "-1 (8HB^2/T at eta = 1/(2HB^2)), floor sigma*^2/(HB^2)",
    "normalized_sgd": "-1 -> -1/2 (Thm 5.1), floor B/(K log N)",
    "token_sgd": "-1 -> -1/2 (Thm 6.1)",
    "distill_truncated": "-1 -> -1/2 (Thm 6.2)",
}


def theory_slope(model: str) -> str:
    base = iterate_of(model)[0].replace("+ttt", "")
    for name, text in THEORY_SLOPE.items():
        if base == name or base.startswith(name + "_"):
            return text
    return "none (no rule in the paper)"


def rate_sweep(metrics, path, spec):
    """KL and Cov_N against the sample size T at the largest H, log-log: one column per iterate
    (last, average), one row per quantity, one line per learner; the initial model, the 'learned'
    threshold (a tenth of its KL) and the theory's slopes -1/2 and -1 drawn."""
    import numpy as np

    study = _study(metrics)
    h = max(metrics["horizon"].unique().to_list())
    levels = shown_levels(spec["evaluate"]["levels"])
    kl = kl_metric(metrics)
    rows = metrics.filter(
        (pl.col("class") == "all")
        & (pl.col("horizon") == h)
        & ((pl.col("metric") == kl) | ((pl.col("metric") == "coverage") & pl.col("level").is_in(levels)))
    ).to_pandas()
    rows["base"], rows["iterate"] = zip(*rows.model.map(iterate_of))
    floor = 0.5 / rows["n"].max()  # Cov_N = 0 drawn at half the resolution of the held-out set
    palette = _palette(rows.model.unique())
    kinds = [k for k in ("last", "average") if (rows.iterate == k).any()]
    quantities = [(kl, None)] + [("coverage", lv) for lv in levels]
    fig, axes = plt.subplots(
        len(quantities), len(kinds), figsize=(6.2 * len(kinds), 3.3 * len(quantities)), squeeze=False, sharex=True
    )
    initial = rows[(rows.step == 0) & (rows.metric == kl)].value.median()
    trained = rows[rows.step > 0]
    steps = np.array(sorted(trained.step.unique()), float)
    for c, kind in enumerate(kinds):
        part = trained[trained.iterate == kind]
        if kind == "average":
            part = pd_concat(part, trained[(trained.iterate == "last") & ~trained.base.isin(part.base)])
        for r, (metric, level) in enumerate(quantities):
            ax = axes[r, c]
            cell = part[(part.metric == metric) & ((part.level == level) if level is not None else True)]
            for base, line in cell.groupby("base"):
                med = line.groupby("step").value.agg(["median", "min", "max"]).clip(lower=floor)
                dotted = kind == "average" and not (line.iterate == "average").any()
                ax.plot(
                    med.index,
                    med["median"],
                    marker="o",
                    markersize=3,
                    color=palette[base],
                    label=base,
                    linestyle=":" if dotted else "-",
                )
                ax.fill_between(med.index, med["min"], med["max"], color=palette[base], alpha=0.1)
            anchor = max(float(cell[cell.step == steps.min()].value.median()), 10 * floor) if len(cell) else 1.0
            positive = cell.value[cell.value > 0]
            # the axis ends just under the data (or the Cov = 0 floor): guide lines do not stretch it
            bottom = (floor if metric == "coverage" else float(positive.min()) if len(positive) else floor) / 2
            for slope, style in ((-0.5, "--"), (-1.0, (0, (1, 3)))):
                ax.plot(
                    steps,
                    anchor * (steps / steps.min()) ** slope,
                    color="black",
                    linestyle=style,
                    linewidth=1,
                    label=f"slope {slope:g}" + (" (sqrt(sigma*^2/T))" if slope == -0.5 else " (B^2 H/T, B^2/T)"),
                )
            if metric == kl:
                ax.axhline(initial, color="grey", linewidth=1, label="initial model (theta = 0)")
                ax.axhline(initial / 10, color="grey", linewidth=1, linestyle="--", label="learned: KL <= initial / 10")
                ax.set(ylabel="sequence KL (nats)")
            else:
                ax.axhline(floor, color="grey", linewidth=0.5)
                ax.set(ylabel=f"Cov_N, N = {level:g}")
            ax.set_yscale("log")
            ax.set_ylim(bottom=bottom)
            _log2_axis(ax, steps)
            if r == 0:
                ax.set_title(f"{kind} iterate")
            if r == len(quantities) - 1:
                ax.set_xlabel("training sequences T")
    _outside_legend(fig, axes.ravel())
    fig.suptitle(
        f"{study}, H = {h}: KL and coverage against the sample size (median over seeds, band = range; "
        f"Cov_N = 0 drawn at {floor:.2g})"
    )
    fig.tight_layout()
    _save(fig, path)


def _learn_point(kl: pl.DataFrame) -> dict:
    """Per seed: the smallest T > 0 with KL(T) <= KL(step 0) / 10 (None if never). kl: one model's
    KL rows at one horizon, columns seed, step, value."""
    out = {}
    for (seed,), part in kl.group_by("seed"):
        start = part.filter(pl.col("step") == 0)["value"]
        if start.is_empty():
            continue
        hit = part.filter((pl.col("step") > 0) & (pl.col("value") <= start[0] / 10))["step"]
        out[seed] = None if hit.is_empty() else int(hit.min())
    return out


def _band(values, fmt="{:.3g}") -> str:
    """'median [min, max]' over seeds."""
    import numpy as np

    v = np.asarray([x for x in values if x == x], float)
    if not len(v):
        return "nan"
    return f"{fmt.format(np.median(v))} [{fmt.format(v.min())}, {fmt.format(v.max())}]"


def rate_table(metrics, path, spec):
    """Markdown, per model at the largest H: when the paper's constants learn (the smallest T with KL at
    most a tenth of the initial model's: median over seeds [earliest, latest seed]), KL and Cov_N at the
    largest T, and the fitted slopes of KL and Cov_N in T against the theory's (median [min, max] of
    per-seed least-squares slopes over the five largest T)."""
    import numpy as np

    h = max(metrics["horizon"].unique().to_list())
    level = rate_level(spec)
    rows = metrics.filter((pl.col("class") == "all") & (pl.col("horizon") == h))
    kl = rows.filter(pl.col("metric") == kl_metric(metrics))
    cov = rows.filter((pl.col("metric") == "coverage") & (pl.col("level") == level))
    steps = sorted(s for s in kl["step"].unique().to_list() if s > 0)
    tail = steps[-5:]
    t_max = steps[-1]
    lines = [
        f"Horizon H = {h}; T = training sequences; {kl['seed'].n_unique()} seeds; Cov_N at N = {level:g}. "
        "learns at: the smallest T with KL <= KL(initial model) / 10 (median over seeds [earliest, latest]; "
        f"'> {t_max}' where a seed never does). Slopes: per seed, least squares of log value on log T over "
        f"T = {', '.join(map(str, tail))} (values > 0 only); median [min, max].",
        "",
        f"| model | iterate | learns at T | KL at T = {t_max:d} | Cov_N at T = {t_max:d} | KL slope | Cov_N slope | "
        "theory's slope (bound) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    starts = {
        s: v for s, v in kl.filter(pl.col("step") == 0).group_by("seed").agg(pl.col("value").median()).iter_rows()
    }
    for model in sorted(kl["model"].unique().to_list(), key=lambda m: (iterate_of(m)[0], iterate_of(m)[1] != "last")):
        base, kind = iterate_of(model)
        mk, mc = kl.filter(pl.col("model") == model), cov.filter(pl.col("model") == model)
        if mk.filter(pl.col("step") == 0).is_empty():  # variants have no step 0: the start is the model's
            mk = pl.concat([mk, kl.filter((pl.col("model") == base.replace("+ttt", "")) & (pl.col("step") == 0))])
        learn = _learn_point(mk)
        hits = [v for v in learn.values() if v is not None]
        if not learn:
            when = "n/a"
        elif len(hits) == len(learn):
            when = _band(hits, "{:.0f}")
        else:
            when = (
                f"> {t_max} ({len(learn) - len(hits)} of {len(learn)} seeds)"
                if not hits
                else f"{_band(hits, '{:.0f}')}; {len(learn) - len(hits)} seeds > {t_max}"
            )
        slopes = {}
        for name, frame in (("kl", mk), ("cov", mc)):
            per_seed = []
            for _, part in frame.filter(pl.col("step").is_in(tail)).group_by("seed"):
                part = part.sort("step")
                per_seed.append(loglog_slope(part["step"].to_numpy(), part["value"].to_numpy()))
            slopes[name] = _band(per_seed, "{:.2f}")
        final_kl = mk.filter(pl.col("step") == t_max)["value"].to_list()
        final_cov = mc.filter(pl.col("step") == t_max)["value"].to_list()
        lines.append(
            f"| {base} | {kind} | {when} | {_band(final_kl)} | {_band(final_cov)} | {slopes['kl']} | "
            f"{slopes['cov']} | {theory_slope(model)} |"
        )
    init = [v for v in starts.values()]
    lines += ["", f"Initial model (theta = 0, uniform): KL = {np.median(init):.4g} nats at H = {h}."]
    with io.atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def hard_instance(metrics, path, spec):
    """Prop. 3.2's event KL >= H/(4n) across seeds, KL n/H, and Cov_N against H."""
    study, final = _study(metrics), final_rows(metrics).to_pandas()
    n = spec.get("n_train")
    level = focus_level(spec)
    kl = final[final.metric == kl_metric(metrics)].copy()
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
    axes[0].set(ylim=(-0.02, 1.02), xlabel="horizon", ylabel="fraction of seeds", title=f"the KL lower bound (n = {n})")
    axes[0].legend(fontsize=8)
    sns.stripplot(
        kl,
        x="horizon",
        y="normalized",
        hue="model",
        dodge=True,
        palette=palette,
        ax=axes[1],
        size=4,
        legend=False,
        native_scale=True,
    )
    axes[1].axhline(0.25, color="black", linestyle=":", linewidth=1)
    axes[1].axhline(0.125, color="black", linestyle="--", linewidth=1)
    axes[1].set_yscale("symlog", linthresh=0.01)
    axes[1].set(ylabel="KL n / H (one dot per seed)", title="KL scaled by n/H; dotted 1/4, dashed 1/8")
    cov = final[(final.metric == "coverage") & (final.level == level)]
    sns.lineplot(
        cov,
        x="horizon",
        y="value",
        hue="model",
        estimator="median",
        errorbar=BAND,
        marker="o",
        palette=palette,
        ax=axes[2],
    )
    axes[2].set(ylim=(-0.02, 1.02), ylabel=f"Cov_{level:g}", title=f"Cov_N, N = {level:g} (median, band = range)")
    axes[2].legend(fontsize=8, title="model")
    for ax in (axes[0], axes[2]):
        ax.set_xscale("log")
    axes[1].set_xscale("log")
    fig.suptitle(f"{study}: {kl.seed.nunique()} seeds per cell")
    _save(fig, path)


def interventions_table(metrics, path, spec):
    """Markdown: per model (last and average iterates), final KL and Cov_N (smallest N and N = 16) at the
    smallest and largest H, and the log-log slopes against H and against sigma*^2 (per seed, median
    [min, max] over seeds); the slope against sigma*^2 is n/a where sigma*^2 varies by less than 10%."""
    import numpy as np

    final = final_rows(metrics).filter(pl.col("step") > 0)
    levels = sorted({rate_level(spec), focus_level(spec)})
    horizons = sorted(final["horizon"].unique().to_list())
    lo, hi = horizons[0], horizons[-1]
    sigma = _sigma_by_horizon(metrics)
    s2 = [sigma.get(h, float("nan")) for h in horizons]
    flat = not (np.nanmax(s2) / np.nanmin(s2) >= 1.1) if sigma else True
    keys = [(kl_metric(metrics), None, "KL")] + [("coverage", lv, f"Cov_{lv:g}") for lv in levels]
    head = (
        "| model | iterate | "
        + " | ".join(f"{n}, H={lo} | {n}, H={hi} | slope in H | slope in sigma*^2" for _, _, n in keys)
        + " |"
    )
    lines = [
        "sigma*^2 of the teacher: " + ", ".join(f"H={h}: {sigma[h]:.3g}" for h in horizons if h in sigma),
        "",
        head,
        "|---" * (2 + 4 * len(keys)) + "|",
    ]
    models = sorted(final["model"].unique().to_list(), key=lambda m: (iterate_of(m)[0], iterate_of(m)[1] != "last"))
    for m in models:
        parts = []
        for metric, level, _ in keys:
            cell = final.filter(
                (pl.col("model") == m)
                & (pl.col("metric") == metric)
                & (pl.col("level").is_null() if level is None else pl.col("level") == level)
            )
            at = {h: cell.filter(pl.col("horizon") == h)["value"].to_list() for h in (lo, hi)}
            in_h, in_s = [], []
            for _, part in cell.group_by("seed"):
                part = part.sort("horizon")
                hs = part["horizon"].to_list()
                in_h.append(loglog_slope(hs, part["value"].to_numpy()))
                in_s.append(loglog_slope([sigma.get(h, float("nan")) for h in hs], part["value"].to_numpy()))
            parts.append(
                f"{_band(at[lo])} | {_band(at[hi])} | {_band(in_h, '{:.2f}')} | "
                + ("n/a (flat)" if flat else _band(in_s, "{:.2f}"))
            )
        base, kind = iterate_of(m)
        lines.append(f"| {base} | {kind} | " + " | ".join(parts) + " |")
    lines += [
        "",
        f"Final checkpoint (T = {int(final['step'].max())} sequences), median [min, max] over seeds. slope: per "
        "seed, least squares of log value on log H (or log sigma*^2) over the H with value > 0 "
        f"({', '.join(map(str, horizons))}); nan where fewer than two are > 0.",
    ]
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
    "rate_table.md": rate_table,
    "interventions_table.md": interventions_table,
    "hard_instance.png": hard_instance,
}

from .plots_finetune import DRAW as FINETUNE_DRAW  # noqa: E402  (they use the helpers above)
from .plots_lowerbound import DRAW as LOWER_BOUND_DRAW  # noqa: E402

DRAW.update(FINETUNE_DRAW)
DRAW.update(LOWER_BOUND_DRAW)
