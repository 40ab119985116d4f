"""What the rules hand their jobs: every named input of a `script:` rule is read by its script (read
statically), and the inputs Snakemake plans for the plot and aggregate jobs are the files those
stages read (a dry run on a miniature config; an input nobody reads still makes the job wait for
it, and a table nobody aggregates is lost to the study's outputs)."""

import re
from pathlib import Path

import polars as pl
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


@pytest.mark.workflow
def test_a_fine_tuning_studys_training_log_aggregates_the_fine_tuning_steps(tmp_path):
    from test_selection import FIG1

    mini_config_writer(tmp_path, FIG1)
    (aggregate,) = planned_inputs(tmp_path)["aggregate"]
    for stage in ("train", "finetune"):
        assert f"results/f1/{stage}/model~transformer/horizon~4/train_log.parquet" in aggregate, aggregate


def test_aggregate_keeps_pre_training_and_fine_tuning_steps_apart(tmp_path):
    from covpipe import aggregate, io

    def log(path, steps, loss):
        io.write_parquet(
            pl.DataFrame(
                {
                    "study": "s",
                    "model": "m",
                    "horizon": 4,
                    "seed": 0,
                    "step": steps,
                    "train_loss": [loss] * len(steps),
                    "seconds": 1.0,
                }
            ),
            path,
        )
        return path

    metrics = tmp_path / "metrics.parquet"
    io.write_parquet(
        pl.DataFrame(
            {
                "model": ["m"],
                "horizon": [4],
                "seed": [0],
                "step": [0],
                "class": ["all"],
                "metric": ["kl"],
                "level": [None],
                "value": [1.0],
            },
            schema_overrides={"level": pl.Float64},
        ),
        metrics,
    )
    aggregate.run(
        [metrics],
        [log(tmp_path / "t.parquet", [10, 20], 2.0)],
        tmp_path / "m.parquet",
        tmp_path / "l.parquet",
        finetune_log_paths=[log(tmp_path / "f.parquet", [2, 4], 1.0)],
    )
    out = pl.read_parquet(tmp_path / "l.parquet")
    assert out.select("stage", "step", "train_loss").rows() == [
        ("train", 10, 2.0),
        ("train", 20, 2.0),
        ("finetune", 2, 1.0),
        ("finetune", 4, 1.0),
    ]
    aggregate.run([metrics], [tmp_path / "t.parquet"], tmp_path / "m.parquet", tmp_path / "l.parquet")
    assert pl.read_parquet(tmp_path / "l.parquet")["stage"].to_list() == ["train", "train"]
