"""The HTML report's headline numbers (`snakemake --report`, workflow/report/workflow.rst).

Snakemake renders the report's landing page with the config and the report's files only; the
page reaches `headlines` through the Snakefile's namespace (workflow/rules/report.smk binds it).
"""

from __future__ import annotations

import os


def headlines(study: str, results: str = "results") -> list[dict]:
    """Headline numbers of one study for the report's landing page, read from
    {results}/{study}/metrics.parquet; [] until its aggregate job has run.

    Per model, at the smallest and the largest horizon H: the final checkpoint's sequence KL (nats;
    `prefix_kl`, exact per prefix and of low variance, where the table has it, as the interventions
    figures read it; else `kl`) and Cov_N at N = 16 (the study's largest level if it has no 16),
    class mixture, median over seeds. Returns [{"model", "kl", "coverage"}] of display strings,
    models in table order.
    """
    import polars as pl

    path = os.path.join(results, study, "metrics.parquet")
    if not os.path.exists(path):
        return []
    rows = pl.read_parquet(path).filter(pl.col("class") == "all")
    last = pl.col("step").max().over("model", "horizon", "seed")
    final = rows.filter(pl.col("step") == last)
    kl = "prefix_kl" if (final["metric"] == "prefix_kl").any() else "kl"
    levels = final.filter(pl.col("metric") == "coverage")["level"].unique().to_list()
    level = 16.0 if 16.0 in levels else max(levels, default=None)
    picked = final.filter((pl.col("metric") == kl) | ((pl.col("metric") == "coverage") & (pl.col("level") == level)))
    medians = picked.group_by("model", "horizon", "metric").agg(pl.col("value").median())
    horizons = sorted({min(final["horizon"]), max(final["horizon"])})

    def cell(model, metric):
        values = medians.filter((pl.col("model") == model) & (pl.col("metric") == metric))
        by_h = dict(zip(values["horizon"], values["value"]))
        shown = [f"{by_h[h]:.3g} (H = {h})" for h in horizons if h in by_h]
        return " -> ".join(shown) or "-"

    name = f"Cov_{level:g}: " if level is not None else ""
    return [
        {"model": m, "kl": cell(m, kl), "coverage": name + cell(m, "coverage")}
        for m in rows["model"].unique(maintain_order=True)
    ]
