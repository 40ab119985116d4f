"""The "interventions" and "rate" figure sets (learners, paper Secs. 5-6; `config/interventions.yaml`):

horizon_sweep.png       final KL and Cov_N (a few N) against H, one line per learner ('+ttt' marks
                        the test-time-training decoder), a row per iterate (last, '+avg' average);
                        sigma*^2 of the teacher under each H
rate_sweep.png          KL and Cov_N against the sample size T (checkpoints, in sequences) on log-log
                        axes at the largest H, a column per iterate, the paper's slopes -1/2 and -1 drawn
interventions_table.md  per learner and iterate: KL and Cov_N at the smallest and largest H and the
                        per-seed log-log slopes against H and against sigma*^2 (median [min, max])
rate_table.md           per learner and iterate: the smallest T at which it learns (KL <= a tenth of
                        the initial model's, step 0), final KL and Cov_N, slopes in T beside the theory's

"interventions" draws horizon_sweep, rate_sweep and interventions_table; "rate" rate_sweep and
rate_table. Lines are medians over seeds; bands span the seeds (min to max).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .common import (
    band,
    by_iterate,
    final_rows,
    focus_level,
    iterate_lines,
    iterate_of,
    iterate_rows,
    kl_metric,
    log2_axis,
    loglog_slope,
    outside_legend,
    palette,
    plt,
    quantity_rows,
    rate_level,
    save,
    shown_levels,
    study_of,
    write_lines,
)


def _sigma_by_horizon(metrics) -> dict:
    """sigma*^2 of the teacher at each H (mixture class), from the metrics table."""
    rows = metrics.filter((pl.col("metric") == "sigma_star_sq") & (pl.col("class") == "all"))
    return {h: v for h, v in rows.group_by("horizon").agg(pl.col("value").median()).iter_rows()}


def _horizon_ticks(ax, horizons, sigma):
    ax.set_xscale("log")
    ax.set_xticks(horizons, labels=[f"{h}" + (f"\n{sigma[h]:.3g}" if h in sigma else "") for h in horizons])
    ax.minorticks_off()


def horizon_sweep(metrics, path, spec, selection=None):
    """Final KL and Cov_N against H: one row per iterate (last, average), one line per learner; the
    x labels carry sigma*^2 under H."""

    study, final = study_of(metrics), final_rows(metrics).to_pandas()
    final = final[final.step > 0]
    final["base"], final["iterate"] = zip(*final.model.map(iterate_of))
    sigma = _sigma_by_horizon(metrics)
    levels = shown_levels(spec["evaluate"]["levels"])
    horizons = sorted(final.horizon.unique())
    colors = palette(final.model.unique())
    floor = 0.5 / final["n"].max()  # Cov_N = 0 (and KL <= 0) drawn at half the resolution of the held-out set
    kinds = [k for k in ("last", "average") if (final.iterate == k).any()]
    fig, axes = plt.subplots(
        len(kinds), 1 + len(levels), figsize=(4.0 * (1 + len(levels)), 3.9 * len(kinds)), squeeze=False
    )
    for row, kind in zip(axes, kinds):
        part = iterate_rows(final, kind)  # the average row: models without iterates (exact MLE) as reference
        for ax, (metric, level) in zip(row, [(kl_metric(metrics), None)] + [("coverage", lv) for lv in levels]):
            cell = quantity_rows(part, metric, level)
            iterate_lines(ax, cell, "horizon", colors, floor if metric == "coverage" else 1e-12, kind)  # log axes
            if metric != "coverage":
                ax.set_yscale("log")
                ax.set(ylabel=f"{kind} iterate\nsequence KL (nats)", title="KL")
            else:  # log: the learners that cover differ by orders of magnitude near 0
                ax.set_yscale("log")
                ax.set(ylim=(floor / 2, 1.5), ylabel="Cov_N (lower is better)", title=f"Cov_N, N = {level:g}")
                ax.axhline(floor, color="grey", linewidth=0.5)
            _horizon_ticks(ax, horizons, sigma)
            ax.set_xlabel("horizon H" + ("\n(sigma*^2 of the teacher)" if sigma else ""))
    outside_legend(fig, axes.ravel())
    fig.suptitle(
        f"{study}: final KL and coverage against H (T = {int(final.step.max())} sequences); median over "
        f"seeds, band = range; 0 drawn at {floor:.2g}; dotted in the average row: no iterates (exact MLE)"
    )
    fig.tight_layout()
    save(fig, path)


def interventions_table(metrics, path, spec, selection=None):
    """Markdown: per model (last and average iterates), final KL and Cov_N (smallest N and N = 16) at the
    smallest and largest H, and the log-log slopes against H and against sigma*^2 (per seed, median
    [min, max] over seeds); the slope against sigma*^2 is n/a where sigma*^2 varies by less than 10%."""
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
    for m in by_iterate(final["model"].unique().to_list()):
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
                f"{band(at[lo])} | {band(at[hi])} | {band(in_h, '{:.2f}')} | "
                + ("n/a (flat)" if flat else band(in_s, "{:.2f}"))
            )
        base, kind = iterate_of(m)
        lines.append(f"| {base} | {kind} | " + " | ".join(parts) + " |")
    lines += [
        "",
        f"Final checkpoint (T = {int(final['step'].max())} sequences), median [min, max] over seeds. slope: per "
        "seed, least squares of log value on log H (or log sigma*^2) over the H with value > 0 "
        f"({', '.join(map(str, horizons))}); nan where fewer than two are > 0.",
    ]
    write_lines(path, lines)


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


def rate_sweep(metrics, path, spec, selection=None):
    """KL and Cov_N against the sample size T at the largest H, log-log: one column per iterate
    (last, average), one row per quantity, one line per learner; the initial model, the 'learned'
    threshold (a tenth of its KL) and the theory's slopes -1/2 and -1 drawn."""
    study = study_of(metrics)
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
    colors = palette(rows.model.unique())
    kinds = [k for k in ("last", "average") if (rows.iterate == k).any()]
    quantities = [(kl, None)] + [("coverage", lv) for lv in levels]
    fig, axes = plt.subplots(
        len(quantities), len(kinds), figsize=(6.2 * len(kinds), 3.3 * len(quantities)), squeeze=False, sharex=True
    )
    initial = rows[(rows.step == 0) & (rows.metric == kl)].value.median()
    trained = rows[rows.step > 0]
    steps = np.array(sorted(trained.step.unique()), float)
    for c, kind in enumerate(kinds):
        part = iterate_rows(trained, kind)
        for r, (metric, level) in enumerate(quantities):
            ax = axes[r, c]
            cell = quantity_rows(part, metric, level)
            iterate_lines(ax, cell, "step", colors, floor, kind, markersize=3)
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
            log2_axis(ax, steps)
            if r == 0:
                ax.set_title(f"{kind} iterate")
            if r == len(quantities) - 1:
                ax.set_xlabel("training sequences T")
    outside_legend(fig, axes.ravel())
    fig.suptitle(
        f"{study}, H = {h}: KL and coverage against the sample size (median over seeds, band = range; "
        f"Cov_N = 0 drawn at {floor:.2g})"
    )
    fig.tight_layout()
    save(fig, path)


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


def rate_table(metrics, path, spec, selection=None):
    """Markdown, per model at the largest H: when the paper's constants learn (the smallest T with KL at
    most a tenth of the initial model's: median over seeds [earliest, latest seed]), KL and Cov_N at the
    largest T, and the fitted slopes of KL and Cov_N in T against the theory's (median [min, max] of
    per-seed least-squares slopes over the five largest T)."""
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
    for model in by_iterate(kl["model"].unique().to_list()):
        base, kind = iterate_of(model)
        mk, mc = kl.filter(pl.col("model") == model), cov.filter(pl.col("model") == model)
        if mk.filter(pl.col("step") == 0).is_empty():  # variants have no step 0: the start is the model's
            mk = pl.concat([mk, kl.filter((pl.col("model") == base.replace("+ttt", "")) & (pl.col("step") == 0))])
        learn = _learn_point(mk)
        hits = [v for v in learn.values() if v is not None]
        if not learn:
            when = "n/a"
        elif len(hits) == len(learn):
            when = band(hits, "{:.0f}")
        else:
            when = (
                f"> {t_max} ({len(learn) - len(hits)} of {len(learn)} seeds)"
                if not hits
                else f"{band(hits, '{:.0f}')}; {len(learn) - len(hits)} seeds > {t_max}"
            )
        slopes = {}
        for name, frame in (("kl", mk), ("cov", mc)):
            per_seed = []
            for _, part in frame.filter(pl.col("step").is_in(tail)).group_by("seed"):
                part = part.sort("step")
                per_seed.append(loglog_slope(part["step"].to_numpy(), part["value"].to_numpy()))
            slopes[name] = band(per_seed, "{:.2f}")
        final_kl = mk.filter(pl.col("step") == t_max)["value"].to_list()
        final_cov = mc.filter(pl.col("step") == t_max)["value"].to_list()
        lines.append(
            f"| {base} | {kind} | {when} | {band(final_kl)} | {band(final_cov)} | {slopes['kl']} | "
            f"{slopes['cov']} | {theory_slope(model)} |"
        )
    init = [v for v in starts.values()]
    lines += ["", f"Initial model (theta = 0, uniform): KL = {np.median(init):.4g} nats at H = {h}."]
    write_lines(path, lines)
