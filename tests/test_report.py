"""`snakemake --report`: one self-contained HTML file with every figure, its caption and the config;
its landing page a table of the studies and their headline numbers, the config below them."""

import base64
import html
import re
from pathlib import Path

import polars as pl
import pytest
from workflow_helpers import snakemake

from covpipe import plots
from covpipe.config import read_config

ROOT = Path(__file__).parents[1]
CAPTIONS = ROOT / "workflow" / "report" / "figures.rst"
LANDING = ROOT / "workflow" / "report" / "workflow.rst"


def test_every_figure_covpipe_draws_has_its_own_caption():
    text = CAPTIONS.read_text()
    missing = [name for name in plots.DRAW if f'figure == "{name}"' not in text]
    assert not missing, f"add a caption branch to {CAPTIONS} for {missing}"


@pytest.mark.workflow
def test_report_is_self_contained_with_every_figure_its_caption_and_the_config(finished):
    directory, _ = finished
    snakemake(directory, "--report", "report.html")
    html = (directory / "report.html").read_text()
    figures = plots.outputs(["horizon"])  # the mini study's figure set
    for name in figures:
        # embedded as a data URI named after the file, and a real PNG inside it
        match = re.search(rf"data:image/png;charset=utf8;filename={re.escape(name)};base64,([A-Za-z0-9+/=]+)", html)
        assert match, f"{name} is not embedded in the report"
        assert base64.b64decode(match.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    # one caption per figure, each its own text (the first words of its branch in figures.rst)
    for opening in [
        "Sequence KL divergence KL(pi_D || pi_hat)",
        "Coverage Cov_N = P[pi_D(y|x) / pi_hat(y|x) &gt;= N]",
        "The whole coverage profile at the end of training",
        "Held-out sequence KL (nats) over training steps",
    ]:
        assert opening in html, opening
    assert "has no caption for this figure" not in html
    # the config the run used (rendered as JSON in the workflow description)
    assert "&quot;n_train&quot;: 32" in html and "&quot;table_per_position&quot;" in html
    # nothing fetched from elsewhere when the file is opened
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=[\"']?https?:", html)


def _landing_page(config: dict, report_headlines=None) -> str:
    """workflow.rst rendered as `snakemake --report` renders it (snakemake/report/__init__.py: Jinja2
    with trim_blocks and lstrip_blocks, then docutils' HTML body); without report_headlines, before
    any result exists (no report files), else with one file whose rule sees that function."""
    import types

    import jinja2
    from docutils.core import publish_parts

    snakemake_object = type("Snakemake", (), {"config": config})
    files = []
    if report_headlines:
        rule = types.SimpleNamespace(module_globals={"report_headlines": report_headlines})
        files = [types.SimpleNamespace(job=types.SimpleNamespace(rule=rule))]
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    text = env.from_string(LANDING.read_text()).render(snakemake=snakemake_object, categories={}, files=files)
    return publish_parts(text, writer_name="html")["html_body"]


def _rows(page: str, heading: str) -> list[list[str]]:
    """The body rows of the table under an <h1> heading, as lists of cell texts."""
    table = page.split(f"<h1>{heading}</h1>", 1)[1].split("</table>", 1)[0]
    body = table.split("<tbody", 1)[1]
    return [
        [html.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # Snakemake's own publish_parts call
@pytest.mark.parametrize("config_file", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_landing_page_of_every_shipped_config_is_a_table_of_its_studies_before_the_config(config_file):
    config = read_config(config_file)
    page = _landing_page(config)
    assert "System Message" not in page, "docutils complained about the rendered workflow.rst"
    assert page.index("<h1>Studies</h1>") < page.index("<h1>Configuration</h1>")
    rows = _rows(page, "Studies")
    assert [r[0] for r in rows] == list(config["studies"])
    for (name, teacher, horizons, models, seeds), study in zip(rows, config["studies"].values()):
        assert teacher == study["teacher"]["name"]
        assert horizons == ", ".join(map(str, study["horizons"]))
        assert all(model in models for model in study["models"])
        assert seeds.startswith(str(study["seeds"]))
    assert "No results yet" in page  # no headline numbers before a run


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_landing_page_lists_the_headline_numbers_of_the_studies_that_have_them():
    config = read_config(ROOT / "config" / "config.yaml")
    row = {"model": "transformer", "kl": "0.4 (H = 8) -> 2.2 (H = 24)", "coverage": "Cov_16: 0.05 (H = 8)"}
    page = _landing_page(config, lambda study: [row] if study == "graph_horizon" else [])
    assert "System Message" not in page
    assert _rows(page, "Headline numbers") == [["graph_horizon", *row.values()]]
    none_yet = _landing_page(config, lambda study: [])  # results exist, no study aggregated yet
    assert "System Message" not in none_yet and "No results yet" in none_yet


@pytest.mark.workflow
def test_landing_page_shows_the_studies_and_their_headline_numbers_before_the_config(finished):
    directory, _ = finished
    snakemake(directory, "--report", "landing.html")
    # the workflow description sits in the page as a JavaScript string: undo its quote escapes
    page = (directory / "landing.html").read_text().replace('\\"', '"').replace("\\n", "\n")
    studies, headlines, config = (page.index(f"<h1>{h}</h1>") for h in ("Studies", "Headline numbers", "Configuration"))
    assert studies < headlines < config < page.index("&quot;n_train&quot;: 32")
    assert _rows(page, "Studies") == [["mini", "markov", "2, 4", "tpp (table_per_position), gru (gru)", "2"]]
    # each model's final KL and Cov_16 at the smallest and the largest horizon, median over seeds,
    # recomputed here from the aggregated table
    metrics = pl.read_parquet(directory / "results" / "mini" / "metrics.parquet").filter(pl.col("class") == "all")
    final = metrics.filter(pl.col("step") == pl.col("step").max().over("model", "horizon", "seed"))

    def median(model, horizon, metric, level=None):
        rows = final.filter((pl.col("model") == model) & (pl.col("horizon") == horizon) & (pl.col("metric") == metric))
        return rows.filter(pl.col("level") == level)["value"].median() if level else rows["value"].median()

    expected = [
        [
            "mini",
            model,
            f"{median(model, 2, 'prefix_kl'):.3g} (H = 2) -> {median(model, 4, 'prefix_kl'):.3g} (H = 4)",
            f"Cov_16: {median(model, 2, 'coverage', 16.0):.3g} (H = 2) -> {median(model, 4, 'coverage', 16.0):.3g} (H = 4)",
        ]
        for model in ("gru", "tpp")
    ]
    assert _rows(page, "Headline numbers") == expected


def test_headlines_are_final_checkpoint_medians_over_seeds(tmp_path):
    """covpipe.report.headlines: per model, the median over seeds of the last checkpoint's prefix_kl
    (preferred over kl) and Cov_16, class mixture only, at the smallest and largest horizon."""
    import polars as pl

    from covpipe.report import headlines

    rows = []
    for h in (4, 8, 16):
        for seed, scale in enumerate((1.0, 2.0, 10.0)):  # median: the middle seed
            for step in (10, 20):
                for metric, level, value in (
                    ("kl", None, 99.0),
                    ("prefix_kl", None, h * scale * step / 20),
                    ("coverage", 16.0, 0.01 * h * scale),
                    ("coverage", 2.0, 0.5),
                ):
                    for cls, shift in (("all", 0.0), ("hard", 1000.0)):
                        rows.append(
                            dict(
                                model="m",
                                horizon=h,
                                seed=seed,
                                step=step,
                                metric=metric,
                                level=level,
                                value=value + shift,
                                **{"class": cls},
                            )
                        )
    (tmp_path / "s").mkdir()
    pl.DataFrame(rows).write_parquet(tmp_path / "s" / "metrics.parquet")
    assert headlines("s", results=str(tmp_path)) == [
        {"model": "m", "kl": "8 (H = 4) -> 32 (H = 16)", "coverage": "Cov_16: 0.08 (H = 4) -> 0.32 (H = 16)"}
    ]
    assert headlines("absent", results=str(tmp_path)) == []
