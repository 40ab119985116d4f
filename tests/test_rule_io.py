"""What the rules hand their jobs: every named input of a `script:` rule is read by its script (read
statically), and the inputs Snakemake plans for the plot and aggregate jobs are the files those
stages read (a dry run on a miniature config; an input nobody reads still makes the job wait for
it, and a table nobody aggregates is lost to the study's outputs)."""

import re
from pathlib import Path

import pytest

from helpers import mini_config
from workflow_helpers import mini_config_writer, planned_inputs

ROOT = Path(__file__).parents[1]


def script_rules() -> dict[str, tuple[set[str], str]]:
    """{rule: (names of its named inputs, its script's text)} for every rule that runs a script."""
    out = {}
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        parts = re.split(r"^rule (\w+):\n", path.read_text(), flags=re.M)
        for name, text in zip(parts[1::2], parts[2::2]):
            script = re.search(r'script:\s*"\.\./scripts/(\w+\.py)"', text)
            block = re.search(r"^    input:\n((?:        .*\n|\n)+?)    \w", text, flags=re.M)
            if script and block:
                names = set(re.findall(r"^        (\w+)=", block.group(1), flags=re.M))
                out[name] = (names, (ROOT / "workflow" / "scripts" / script.group(1)).read_text())
    return out


def test_script_rules_are_found():
    assert {"train", "evaluate", "aggregate", "plot"} <= set(script_rules())


@pytest.mark.parametrize("rule", sorted(script_rules()))
def test_every_named_input_is_read_by_the_rules_script(rule):
    names, script = script_rules()[rule]
    unread = {n for n in names if f"snakemake.input.{n}" not in script and f'snakemake.input["{n}"]' not in script}
    assert not unread, f"rule {rule}: inputs {sorted(unread)} are never read by its script"


@pytest.mark.workflow
def test_figures_wait_for_the_tables_they_are_drawn_from_only(tmp_path):
    mini_config_writer(tmp_path, mini_config())
    plots = planned_inputs(tmp_path)["plot"]
    assert len(plots) == 4
    assert all(inputs == {"results/mini/metrics.parquet"} for inputs in plots), plots

