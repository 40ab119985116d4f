"""`snakemake --report`: one self-contained HTML file with every figure, its caption and the config."""

import base64
import re
from pathlib import Path

import pytest
from workflow_helpers import snakemake

from covpipe import plots

CAPTIONS = Path(__file__).parents[1] / "workflow" / "report" / "figures.rst"


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
