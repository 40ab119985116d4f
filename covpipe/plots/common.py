"""What the figure modules share: pyplot and seaborn (Agg backend), saving a figure or a markdown
table atomically, the band over seeds, the last checkpoint's rows of a metrics table, the levels
N a figure shows, the learners' iterates (last, '+avg' average) and their palette, log axes, one
legend outside the panels, log-log slopes and 'median [min, max]' cells.

Importing this module imports matplotlib and seaborn (1 to 5 s): only the draw modules do, never
covpipe.plots itself, which the Snakefile imports to plan.
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import polars as pl
import seaborn as sns
from matplotlib.ticker import FixedLocator, NullLocator

from .. import io

matplotlib.use("Agg")  # files only, never a window, also where a display is set

__all__ = ["plt", "sns"]

BAND = ("pi", 100)  # the full range over seeds
QUANTILE_BAND = ("pi", 100 * 14 / 16)  # from the 1/16 to the 15/16 quantile across seeds
AVG = "+avg"  # the average-iterate variant of a learner-trained model (covpipe.learners.fitting.variants)


def set_theme() -> None:
    """The look of every figure: seaborn's white grid at notebook size."""
    sns.set_theme(style="whitegrid", context="notebook")


def save(fig, path) -> None:
    """Write fig as PNG (120 dpi, tight box) atomically and close it."""
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def write_lines(path, lines: list[str]) -> None:
    """Write a markdown table (or any text) atomically, one line per item, a newline at the end."""
    with io.atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def study_of(metrics: pl.DataFrame) -> str:
    """The study's name, from its metrics table."""
    return metrics["study"][0]


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


def focus_level(spec) -> float:
    """The coverage level of the paper's Figure 2 (N = 16), or the grid's middle level."""
    levels = sorted(spec["evaluate"]["levels"])
    return 16.0 if 16 in levels else levels[len(levels) // 2]


def rate_level(spec) -> float:
    """The coverage level of the rate sweep: the smallest N of the grid (the last to reach 0)."""
    return float(min(spec["evaluate"]["levels"]))


def kl_metric(metrics) -> str:
    """The KL the interventions figures read: prefix_kl (exact per prefix, >= 0, low variance) where the
    table has it, else kl (the mean log-ratio; older tables)."""
    return "prefix_kl" if (metrics["metric"] == "prefix_kl").any() else "kl"


def iterate_of(model: str) -> tuple[str, str]:
    """(the model it varies, 'last' or 'average'): 'tok+avg+ttt' -> ('tok+ttt', 'average')."""
    return (model.replace(AVG, ""), "average") if AVG in model else (model, "last")


def by_iterate(models: list[str]) -> list[str]:
    """Models sorted by the model they vary, the last iterate before the average one."""
    return sorted(models, key=lambda m: (iterate_of(m)[0], iterate_of(m)[1] != "last"))


def palette(models) -> dict:
    """{model it varies: colour}: a learner's iterates share its colour."""
    bases = sorted({iterate_of(m)[0] for m in models})
    return dict(zip(bases, sns.color_palette("tab10" if len(bases) <= 10 else "tab20", len(bases))))


def pd_concat(*frames):
    return pd.concat(frames, ignore_index=True)


def iterate_rows(frame, kind: str):
    """The rows of one iterate ('last' or 'average') of a pandas frame with columns base and iterate;
    the average row also holds the models without iterates (the exact MLE), as the reference."""
    part = frame[frame.iterate == kind]
    if kind == "average":
        part = pd_concat(part, frame[(frame.iterate == "last") & ~frame.base.isin(part.base)])
    return part


def quantity_rows(frame, metric: str, level):
    """The rows of one metric (at one coverage level; level None for a KL) of a pandas frame."""
    return frame[(frame.metric == metric) & ((frame.level == level) if level is not None else True)]


def iterate_lines(ax, cell, x: str, colors: dict, lower: float, kind: str, **style) -> None:
    """One line per learner (column base) of a pandas frame: the median over seeds against x, a band
    from min to max, values clipped below at `lower` (log axes); dotted in the average row where the
    model has no average iterate."""
    for base, line in cell.groupby("base"):
        med = line.groupby(x).value.agg(["median", "min", "max"]).clip(lower=lower)
        dotted = kind == "average" and not (line.iterate == "average").any()
        ax.plot(
            med.index,
            med["median"],
            marker="o",
            color=colors[base],
            label=base,
            linestyle=":" if dotted else "-",
            **style,
        )
        ax.fill_between(med.index, med["min"], med["max"], color=colors[base], alpha=0.1)


def outside_legend(fig, axes, title="model"):
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


def log2_axis(ax, values):
    """x on a log2 axis, one label every other power of 2 (2^5, 2^7, ...) so labels never collide."""
    powers = sorted({int(round(np.log2(v))) for v in values if v > 0})
    if not powers:
        return
    ax.set_xscale("log", base=2)
    step = 1 if len(powers) <= 7 else 2
    shown = powers[::step]
    ax.xaxis.set_major_locator(FixedLocator([2.0**p for p in shown]))
    ax.set_xticklabels([f"$2^{{{p}}}$" for p in shown])
    ax.xaxis.set_minor_locator(NullLocator())


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y on log x over the points with y > 0 (nan with fewer than 2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = (x > 0) & (y > 0)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def band(values, fmt="{:.3g}", empty="nan", finite=False) -> str:
    """'median [min, max]' over seeds of the values that are not NaN (with finite: nor +-inf);
    `empty` where none is left."""
    if finite:
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
    else:
        v = np.asarray([x for x in values if x == x], float)
    if not len(v):
        return empty
    return f"{fmt.format(np.median(v))} [{fmt.format(v.min())}, {fmt.format(v.max())}]"
