"""The lower-bound check of paper Prop. 5.1 on the App. I.4 instances (teachers/sgd_lower_bound.py):
for each model, does Cov_N(pi_theta_t) stay >= c min{H/(T log N), 1} at every checkpoint t?

The "lower_bound" figure set:
    lower_bound.md  per (model, H): the bound, the fraction of seeds for which Cov_N (mixture) stays above
                    c = 1/4 of it at every checkpoint (Prop. 5.1 claims probability >= 1/2 for sequence SGD),
                    min over checkpoints and final Cov_N (median over seeds), and the final Cov_N of the rare
                    prompts where the instance has them. N: the study's focus level; T: the last checkpoint.
                    Checkpoints are those after training starts (step 0, the start theta_0, is left out);
                    '<model>+avg' rows are the average iterates.
c = 1/4: the I.7 instances guarantee their floor p pi_D(+1 | rare) >= 1/4 of the bound (tests), the I.6
ones Cov_N ~ 1.
"""

from __future__ import annotations

import math

import polars as pl

from .common import focus_level, write_lines

C = 0.25


def lower_bound_table(metrics, path, spec, selection=None):
    level = focus_level(spec)
    # step 0 is the start theta_0 (bad by construction), not a learner's output: the MLE would inherit it
    cov = metrics.filter((pl.col("metric") == "coverage") & (pl.col("level") == level) & (pl.col("step") > 0))
    T = int(cov["step"].max())
    mix = cov.filter(pl.col("class") == "all")
    per_seed = mix.group_by("model", "horizon", "seed").agg(
        pl.col("value").min().alias("min"), pl.col("value").sort_by("step").last().alias("final")
    )
    rare = (
        cov.filter((pl.col("class") == "rare") & (pl.col("step") == T))
        .group_by("model", "horizon")
        .agg(pl.col("value").median().alias("rare"))
    )
    rows = per_seed.with_columns(
        pl.col("horizon")
        .map_elements(lambda h: min(h / (T * math.log(level)), 1.0), return_dtype=pl.Float64)
        .alias("bound")
    )
    table = (
        rows.group_by("model", "horizon")
        .agg(
            pl.col("bound").first(),
            (pl.col("min") >= C * pl.col("bound")).mean().alias("held"),
            pl.col("min").median(),
            pl.col("final").median(),
            pl.len().alias("seeds"),
        )
        .join(rare, on=["model", "horizon"], how="left")
        .sort("horizon", "model")
    )
    lines = [
        f"Cov_{level:g} against Prop. 5.1's bound c min{{H/(T log N), 1}}, c = {C:g}, T = {T}, at every "
        "checkpoint (mixture)",
        "",
        f"| model | H | min{{H/(T log N), 1}} | seeds with Cov >= c bound at every checkpoint | "
        f"min_t Cov_{level:g} | final Cov_{level:g} | final Cov_{level:g}, rare prompts |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table.iter_rows(named=True):
        rare_cell = "-" if r["rare"] is None else f"{r['rare']:.3g}"
        lines.append(
            f"| {r['model']} | {r['horizon']} | {r['bound']:.3g} | {r['held']:.2f} ({r['seeds']}) | "
            f"{r['min']:.3g} | {r['final']:.3g} | {rare_cell} |"
        )
    lines += [
        "",
        "min_t, final: medians over seeds. Prop. 5.1 (sequence SGD, any constant step): the bound holds "
        "at every t with probability >= 1/2.",
    ]
    write_lines(path, lines)
