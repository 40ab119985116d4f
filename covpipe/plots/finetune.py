"""The "finetune" figure set: the paper's Figure 1 layout and its tables (paper-notes Sec. 5.2).

fig1_training.png        Cov_N for several N (left axis) and sequence KL (right axis, nats) over
                         fine-tuning steps, every trained model in one panel (line style per
                         model, in the legend: solid rule_mixture, dashed transformer); medians over
                         runs, bands span the runs
fig1_scatter.png         Pass@N against Cov_{N/2} (bottom axis) and KL (top axis) over every
                         checkpoint of every run, one row per model, one panel per N; the
                         headline min-CE and tournament picks are marked
rank_correlations.md     Spearman correlation across checkpoints of -KL and of -Cov_{N/2} with
                         Pass@N, per run; median [min, max] over runs
selection.md             per rule and N, headline setting: true Pass@N of the pick, its gap to
                         the oracle and its margin over min-CE's pick (per run: the minimum over
                         runs says whether a rule wins in every run), KL and step
selection_sensitivity.md the tournaments at every level ratio, tie break and offset a run, with
                         their margin over min-CE and whether Thm 6.4 covers the offset setting
fig1_checks.md           per model and run: does KL fall at every checkpoint, Pass@8's peak and
                         its fall by the end, each Cov_N's dip and rise after its minimum
pretrain_check.md        what pre-training learned, per class, at fine-tuning step 0 and at the
                         end: KL, valid-path mass, branch agreement, first-branch match rate
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.stats import spearmanr

from .common import BAND, band, plt, save, sns, study_of, write_lines

FIG1_LEVELS = (2.0, 3.0, 4.0, 4.6, 5.7, 8.0)  # the paper's left panel, and 8: where an independent-branch model dips
PICK_STYLE = {
    "min_ce": ("X", "tab:red", "min CE"),
    "tournament": ("D", "black", "tournament"),
    "offset_tournament": ("P", "tab:purple", "offset tournament"),
}


def _mix(metrics, metric, level=None):
    rows = metrics.filter((pl.col("class") == "all") & (pl.col("metric") == metric))
    if level is not None:
        rows = rows.filter(pl.col("level") == float(level))
    return rows.select("model", "horizon", "seed", "step", "value")


def _trained(metrics):
    counts = metrics.group_by("model").agg(pl.col("step").n_unique().alias("k"))
    return counts.filter(pl.col("k") > 1)["model"].sort().to_list()


COV_RATIO = 0.5  # the paper pairs Pass@N with Cov_{N/2} (Fig. 1), whatever level the tournaments run at


def _scatter_ns(spec):
    sel = spec.get("selection") or {}
    return [n for n in sel.get("pass_at", [4, 8, 12])][:3], COV_RATIO


LINE_STYLES = ["", (4, 2), (1, 1.5), (6, 2, 1, 2)]  # seaborn dashes, one per model


def _median_lines(frame, ax, dashes, **style):
    """Median over runs (band = range) of `value` against the fine-tuning step, a line style per model."""
    sns.lineplot(
        frame, x="step", y="value", style="model", dashes=dashes, estimator="median", errorbar=BAND, ax=ax, **style
    )


def fig1_training(metrics, path, spec, selection=None):
    study = study_of(metrics)
    models = _trained(metrics)
    levels = [v for v in FIG1_LEVELS if v in spec["evaluate"]["levels"]] or spec["evaluate"]["levels"][:5]
    dashes = {m: LINE_STYLES[i % len(LINE_STYLES)] for i, m in enumerate(models)}
    fig, ax = plt.subplots(figsize=(9, 4.8))
    rows = metrics.filter(pl.col("model").is_in(models))
    cov = rows.filter(
        (pl.col("class") == "all") & (pl.col("metric") == "coverage") & pl.col("level").is_in(levels)
    ).to_pandas()
    cov["N"] = cov.level.map(lambda v: f"Cov_{v:g}")
    _median_lines(cov, ax, dashes, hue="N", palette="crest")
    ax.set(xlabel="fine-tuning step", ylabel="Cov_N (lower is better)", ylim=(-0.02, 1.02))
    kl_ax = ax.twinx()
    kl = _mix(rows, "kl").to_pandas()
    _median_lines(kl, kl_ax, dashes, color="tab:red")
    kl_ax.set(ylabel="sequence KL (nats), red", ylim=(0, max(2.0, float(kl.value.max()) * 1.05)))
    kl_ax.grid(False)
    kl_ax.get_legend().remove()
    ax.legend(loc="upper left", bbox_to_anchor=(1.12, 1.0), fontsize=8)
    runs = metrics["seed"].n_unique()
    ax.set_title(f"{study}: Cov_N and KL (red) over fine-tuning; median over {runs} runs, band = range")
    save(fig, path)


def headline(selection):
    """The selection rows of the headline setting (older tables without the column: every row)."""
    if selection is None or "headline" not in selection.columns:
        return selection
    return selection.filter(pl.col("headline"))


def _pass_cov_kl(rows, n):
    """Mixture rows per checkpoint of each run: Pass@N (column pass), Cov_{N * COV_RATIO} (cov), KL (kl)."""
    keys = ["model", "horizon", "seed", "step"]
    return (
        _mix(rows, "pass_at_n", n)
        .rename({"value": "pass"})
        .join(_mix(rows, "coverage", n * COV_RATIO).rename({"value": "cov"}), on=keys)
        .join(_mix(rows, "kl").rename({"value": "kl"}), on=keys)
    )


def fig1_scatter(metrics, path, spec, selection=None):
    study = study_of(metrics)
    ns, ratio = _scatter_ns(spec)
    models = _trained(metrics)
    fig, axes = plt.subplots(len(models), len(ns), figsize=(5.2 * len(ns), 4.4 * len(models)), squeeze=False)
    fig.subplots_adjust(hspace=0.65, wspace=0.4)  # room for each row's top (KL) axis label
    for row, model in zip(axes, models):
        rows = metrics.filter(pl.col("model") == model)
        for ax, n in zip(row, ns):
            pts = _pass_cov_kl(rows, n)
            sc = ax.scatter(pts["cov"], pts["pass"], c=pts["step"], cmap="viridis", s=18, label="checkpoints (by Cov)")
            top = ax.twiny()
            top.scatter(pts["kl"], pts["pass"], c=pts["step"], cmap="viridis", marker="^", s=14, alpha=0.35)
            top.set_xlabel("sequence KL (nats), triangles")
            top.grid(False)
            if selection is not None:
                picks = headline(selection).filter((pl.col("model") == model) & (pl.col("n") == float(n)))
                for rule, (marker, color, label) in PICK_STYLE.items():
                    # placed at the picked checkpoint's Cov_{N/2}, the axis, whatever level the rule ran at
                    p = picks.filter(pl.col("rule") == rule).select("seed", "step").join(pts, on=["seed", "step"])
                    if len(p):
                        ax.scatter(
                            p["cov"],
                            p["pass"],
                            marker=marker,
                            s=90,
                            facecolors="none",
                            edgecolors=color,
                            linewidths=1.8,
                            label=f"{label} pick",
                        )
            ax.set(xlabel=f"Cov_{n * ratio:g}, circles", ylabel=f"{model}: Pass@{n:g}")
            ax.legend(fontsize=7, loc="lower left")
        fig.colorbar(sc, ax=row[-1], label="fine-tuning step")
    fig.suptitle(f"{study}: Pass@N against Cov_(N/2) and KL over checkpoints (all runs)", y=1.0)
    save(fig, path)


def rank_correlations(metrics, spec) -> pl.DataFrame:
    """Spearman rho across checkpoints of -KL and -Cov_{N/2} with Pass@N: one row per (model, seed, N)."""
    rows = []
    ratio = COV_RATIO
    ns = [n for n in spec["evaluate"]["pass_at"] if n >= 2 and n * ratio in spec["evaluate"]["levels"]]
    for model in _trained(metrics):
        m = metrics.filter(pl.col("model") == model)
        for n in ns:
            both = _pass_cov_kl(m, n)
            for (seed,), g in both.group_by(["seed"]):
                rho_kl = spearman(-g["kl"].to_numpy(), g["pass"].to_numpy())
                rho_cov = spearman(-g["cov"].to_numpy(), g["pass"].to_numpy())
                rows.append(
                    {"model": model, "seed": seed, "n": float(n), "rho_kl": float(rho_kl), "rho_cov": float(rho_cov)}
                )
    return pl.DataFrame(rows)


def spearman(x, y) -> float:
    """Spearman's rho of two equally long 1-D arrays (scipy: Pearson correlation of average ranks, so
    ties share a rank); NaN when either side is constant (checked here: scipy would warn)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or (x == x[0]).all() or (y == y[0]).all():
        return float("nan")
    # (y, x): scipy then divides the covariance of the ranks by x's deviation first, as
    # np.corrcoef(rank x, rank y)[0, 1] does, so the tables keep their values to the last bit
    return float(spearmanr(y, x).statistic)


def _band(values) -> str:
    """'median [min, max]' over runs, 3 decimals, finite values only."""
    return band(values, "{:.3f}", empty="n/a", finite=True)


def rank_correlation_table(metrics, path, spec, selection=None):
    table = rank_correlations(metrics, spec)
    ratio = COV_RATIO
    lines = [
        "Spearman rank correlation with Pass@N across checkpoints (per seed; median [min, max] over seeds). "
        "NaN where Pass@N or the predictor is constant.",
        "",
        "| model | N | rho(-KL, Pass@N) | rho(-Cov_{N/2}, Pass@N) | seeds |",
        "|---|---|---|---|---|",
    ]
    for (model, n), g in sorted(table.group_by(["model", "n"]), key=lambda kv: kv[0]):
        lines.append(
            f"| {model} | {n:g} (Cov_{n * ratio:g}) | {_band(g['rho_kl'])} | {_band(g['rho_cov'])} | {len(g)} |"
        )
    write_lines(path, lines)


RULE_ORDER = {r: i for i, r in enumerate(["min_ce", "tournament", "offset_tournament", "oracle"])}
KEYS = ["model", "n", "seed"]


def _margins(selection):
    """Each row's Pass@N minus the min-CE pick's, same model, N and run: column `vs_min_ce`."""
    base = selection.filter(pl.col("rule") == "min_ce").select(*KEYS, pl.col("pass_at_n").alias("_base"))
    return selection.join(base, on=KEYS, how="left").with_columns(vs_min_ce=pl.col("pass_at_n") - pl.col("_base"))


def _setting(row) -> str:
    if row["rule"] in ("min_ce", "oracle"):
        return ""
    text = f"level {row['level_ratio']:g}N, ties: {row['tie_break']}"
    if row["rule"] == "offset_tournament":
        inside = "inside" if row["in_theorem"] else "outside"
        text += f", a = {row['offset_a']:g}, {inside} Thm 6.4"
    return text


def selection_table(metrics, path, spec, selection=None):
    sel = spec.get("selection") or {}
    lines = [
        "True Pass@N of the checkpoint each rule picks, headline setting (level ratio "
        f"{sel.get('level_ratio', 0.5):g}, ties: {sel.get('tie_break', 'ce')}); median [min, max] over runs. "
        "gap = oracle - pick; vs min-CE = pick - min-CE's pick in the same run (its minimum over runs "
        "is the margin in every run).",
        "",
        "| model | N | rule | Pass@N | vs min-CE | gap to oracle | KL (nats) | steps picked |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if selection is None or selection.is_empty():
        lines.append("| (this study has no selection stage) | | | | | | | |")
    else:
        table = _margins(headline(selection))
        groups = sorted(
            table.group_by(["model", "n", "rule"]), key=lambda kv: (kv[0][0], kv[0][1], RULE_ORDER[kv[0][2]])
        )
        for (model, n, rule), g in groups:
            steps = ", ".join(str(s) for s in g.sort("seed")["step"])
            label = (
                rule if rule != "offset_tournament" else f"{rule} ({_setting(g.row(0, named=True)).split(', ', 2)[-1]})"
            )  # a, Thm
            lines.append(
                f"| {model} | {n:g} | {label} | {_band(g['pass_at_n'])} | {_band(g['vs_min_ce'])} | "
                f"{_band(g['oracle_gap'])} | {_band(g['kl'])} | {steps} |"
            )
    write_lines(path, lines)


def selection_sensitivity(metrics, path, spec, selection=None):
    lines = [
        "Sensitivity of the tournaments' picks to the level (ratio x N), the tie break and the offset a: "
        "true Pass@N of the pick and its margin over min-CE's pick in the same run; median [min, max] over "
        "runs. Bold: the headline setting. Thm 6.4 covers the offset tournament where a > 0 and "
        "level^(1-2a) >= 8.",
        "",
        "| model | N | rule | setting | Pass@N | vs min-CE | steps picked |",
        "|---|---|---|---|---|---|---|",
    ]
    if selection is None or selection.is_empty() or "headline" not in selection.columns:
        lines.append("| (no selection sensitivity in this study) | | | | | | |")
    else:
        table = _margins(selection).filter(pl.col("rule").is_in(["tournament", "offset_tournament"]))
        keys = ["model", "n", "rule", "offset_a", "level_ratio", "tie_break"]
        groups = sorted(
            table.group_by(keys, maintain_order=True),
            key=lambda kv: (kv[0][0], kv[0][1], RULE_ORDER[kv[0][2]], kv[0][3] or 0, kv[0][4], kv[0][5]),
        )
        for (model, n, rule, *_), g in groups:
            row = g.row(0, named=True)
            setting = _setting(row)
            if row["headline"]:
                setting = f"**{setting}**"
            steps = ", ".join(str(s) for s in g.sort("seed")["step"])
            lines.append(
                f"| {model} | {n:g} | {rule} | {setting} | {_band(g['pass_at_n'])} | {_band(g['vs_min_ce'])} "
                f"| {steps} |"
            )
    write_lines(path, lines)


DIP_LEVELS = (4.0, 4.6, 5.7, 6.0, 8.0)


def fig1_checks(metrics, path, spec, selection=None):
    """Per model and run, the shape of the Figure 1 curves, measured: whether KL falls at every
    checkpoint, where Pass@8 peaks and how far it falls by the end, and for each N whether Cov_N
    dips below its start and how far it rises again after its minimum."""
    n_pass = 8.0 if 8.0 in spec["evaluate"]["pass_at"] else max(spec["evaluate"]["pass_at"])
    levels = [v for v in DIP_LEVELS if v in spec["evaluate"]["levels"]]
    lines = [
        f"Shape of the Figure 1 curves per fine-tuning run (mixture rows). KL rises: checkpoints where KL is "
        f"above the previous one (largest rise, nats). Pass@{n_pass:g}: peak (step) and last. Cov_N: start -> "
        "minimum (step) -> largest value after the minimum; rise = that value - the minimum.",
        "",
        f"| model | run | KL first -> last | KL rises | Pass@{n_pass:g} peak (step) | last | peak - last | "
        + " | ".join(f"Cov_{v:g}: start -> min (step) -> after, rise" for v in levels)
        + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(levels),
    ]
    for model in _trained(metrics):
        rows = metrics.filter(pl.col("model") == model)
        for seed in sorted(rows["seed"].unique()):
            run = rows.filter(pl.col("seed") == seed)
            kl = _mix(run, "kl").sort("step")
            diffs = np.diff(kl["value"].to_numpy())
            rises = f"{int((diffs > 0).sum())} ({max(diffs.max(), 0):.4f})" if len(diffs) else "n/a"
            pas = _mix(run, "pass_at_n", n_pass).sort("step")
            peak = pas.row(int(np.argmax(pas["value"].to_numpy())), named=True)
            last = pas["value"][-1]
            cells = []
            for v in levels:
                cov = _mix(run, "coverage", v).sort("step")
                values, steps = cov["value"].to_numpy(), cov["step"].to_numpy()
                low = int(np.argmin(values))
                after = values[low:].max()
                cells.append(
                    f"{values[0]:.3f} -> {values[low]:.3f} ({steps[low]}) -> {after:.3f}, {after - values[low]:+.3f}"
                )
            lines.append(
                f"| {model} | {seed} | {kl['value'][0]:.3f} -> {kl['value'][-1]:.3f} | {rises} | "
                f"{peak['value']:.4f} ({peak['step']}) | {last:.4f} | {peak['value'] - last:+.4f} | "
                + " | ".join(cells)
                + " |"
            )
    write_lines(path, lines)


CHECK_METRICS = ("kl", "valid_mass", "branch_agreement", "first_branch_match")


def pretrain_check(metrics, path, spec, selection=None):
    last = metrics["step"].max()
    rows = metrics.filter(pl.col("metric").is_in(CHECK_METRICS) & pl.col("step").is_in([0, last]))
    lines = [
        "What the pre-trained model (fine-tuning step 0) and the last fine-tuned checkpoint do, per class; "
        "median [min, max] over seeds. Ideal pre-trained model that cannot see the class: valid mass 1, "
        "branch agreement 5/6, first-branch match 1/2; fully fine-tuned: agreement 1, match 0.9 on every class.",
        "",
        "| model | step | class | " + " | ".join(CHECK_METRICS) + " |",
        "|---|---|---|" + "---|" * len(CHECK_METRICS),
    ]
    for (model, step, cls), g in sorted(rows.group_by(["model", "step", "class"]), key=lambda kv: kv[0]):
        cells = [_band(g.filter(pl.col("metric") == m)["value"]) for m in CHECK_METRICS]
        lines.append(f"| {model} | {step} | {cls} | " + " | ".join(cells) + " |")
    write_lines(path, lines)
