"""`covpipe <stage>` by hand builds the spec the workflow rule builds, so a stage run from the command
line writes what the workflow would."""

import copy
import json
from pathlib import Path

import pytest
import yaml
from test_selection import FIG1

from covpipe import finetune, specs
from covpipe.cli import main
from covpipe.config import load_config


def test_covpipe_evaluate_on_a_fine_tuning_study_uses_the_fine_tuning_spec(tmp_path):
    """The workflow evaluates a fine-tuning study's fine-tuned checkpoints against the fine-tuning
    teacher (workflow/rules/common.smk evaluate_spec); `covpipe evaluate` must too."""
    cfg = copy.deepcopy(FIG1)
    study = cfg["studies"]["f1"]
    study.update(seeds=1, data={"n_train": 32, "n_eval": 8})
    study["train"].update(steps=4, checkpoints=[4])
    study["finetune"]["train"].update(steps=2, checkpoints=[2])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    cell = ["--config", str(config), "--study", "f1", "--horizon", "4"]
    assert (
        main(["data", *cell, "--train", str(tmp_path / "train.parquet"), "--eval", str(tmp_path / "eval.parquet")]) == 0
    )
    assert (
        main(
            [
                "train",
                *cell,
                "--model",
                "transformer",
                "--data",
                str(tmp_path / "train.parquet"),
                "--checkpoints",
                str(tmp_path / "pre.pt"),
                "--log",
                str(tmp_path / "pre_log.parquet"),
            ]
        )
        == 0
    )
    resolved = load_config(config)["studies"]["f1"]
    ft_spec = specs.finetune_spec("f1", resolved, "transformer", 4)
    finetune.run(tmp_path / "pre.pt", tmp_path / "ft.pt", tmp_path / "ft_log.parquet", ft_spec, backend="serial")
    assert (
        main(
            [
                "evaluate",
                *cell,
                "--model",
                "transformer",
                "--eval",
                str(tmp_path / "eval.parquet"),
                "--checkpoints",
                str(tmp_path / "ft.pt"),
                "--metrics",
                str(tmp_path / "m.parquet"),
                "--log-ratios",
                str(tmp_path / "r.parquet"),
            ]
        )
        == 0
    )
    written = json.loads((tmp_path / "m.parquet.provenance.json").read_text())["spec"]
    want = json.loads(json.dumps(specs.evaluate_spec(ft_spec, resolved["evaluate"]), default=str))
    assert written == want
    assert written["teacher"]["classes"] == {"match": 0.9, "mismatch": 0.1} and "pretrain" in written


@pytest.mark.workflow
def test_every_stage_from_the_cli_writes_what_the_workflow_wrote(tmp_path):
    """Each `covpipe <stage>` builds the spec the rule builds (covpipe.specs) and calls what the
    rule's script calls: run from the command line on the workflow's own inputs, every stage
    records the workflow's spec and writes the workflow's tables."""
    import polars as pl
    from workflow_helpers import mini_config_writer, snakemake

    from covpipe.cli import STAGES

    cfg = copy.deepcopy(FIG1)
    study = cfg["studies"]["f1"]
    study.update(seeds=1, data={"n_train": 32, "n_eval": 8, "shared_across_seeds": True})
    study["train"].update(steps=4, checkpoints=[4])
    study["finetune"]["train"].update(steps=2, checkpoints=[2])
    study["models"] = {"transformer": study["models"]["transformer"]}
    work, cli = tmp_path / "work", tmp_path / "cli"
    mini_config_writer(work, cfg)
    snakemake(work)
    res, config = work / "results" / "f1", str(work / "config" / "config.yaml")
    cell = ["--config", config, "--study", "f1"]
    at = [*cell, "--model", "transformer", "--horizon", "4"]
    out = {
        name: str(cli / name)
        for name in (
            "train.parquet",
            "eval.parquet",
            "select.parquet",
            "pre.pt",
            "pre.parquet",
            "ft.pt",
            "ft.parquet",
            "m.parquet",
            "r.parquet",
            "sel.parquet",
            "metrics.parquet",
            "train_log.parquet",
            "selection.parquet",
            "fig1_checks.md",
        )
    }
    cli.mkdir()
    cell_dir = "model~transformer/horizon~4"
    runs = {
        "data": [*cell, "--horizon", "4", "--train", out["train.parquet"], "--eval", out["eval.parquet"]],
        "select-data": [*cell, "--horizon", "4", "--select", out["select.parquet"]],
        "train": [
            *at,
            "--data",
            str(res / "data/horizon~4/train.parquet"),
            "--checkpoints",
            out["pre.pt"],
            "--log",
            out["pre.parquet"],
        ],
        "finetune": [
            *at,
            "--pretrained",
            str(res / f"train/{cell_dir}/checkpoints.pt"),
            "--checkpoints",
            out["ft.pt"],
            "--log",
            out["ft.parquet"],
        ],
        "evaluate": [
            *at,
            "--eval",
            str(res / "data/horizon~4/eval.parquet"),
            "--checkpoints",
            str(res / f"finetune/{cell_dir}/checkpoints.pt"),
            "--metrics",
            out["m.parquet"],
            "--log-ratios",
            out["r.parquet"],
        ],
        "select": [
            *at,
            "--select",
            str(res / "data/horizon~4/select.parquet"),
            "--checkpoints",
            str(res / f"finetune/{cell_dir}/checkpoints.pt"),
            "--metrics",
            str(res / f"eval/{cell_dir}/metrics.parquet"),
            "--selection",
            out["sel.parquet"],
        ],
        "aggregate": [
            *cell,
            "--metrics",
            str(res / f"eval/{cell_dir}/metrics.parquet"),
            "--train-logs",
            str(res / f"train/{cell_dir}/train_log.parquet"),
            "--finetune-logs",
            str(res / f"finetune/{cell_dir}/train_log.parquet"),
            "--metrics-out",
            out["metrics.parquet"],
            "--train-log-out",
            out["train_log.parquet"],
        ],
        "aggregate-selection": [
            *cell,
            "--tables",
            str(res / f"select/{cell_dir}/selection.parquet"),
            "--selection",
            out["selection.parquet"],
        ],
        "plot": [
            *cell,
            "--metrics",
            str(res / "metrics.parquet"),
            "--selection-table",
            str(res / "selection.parquet"),
            "--figure",
            out["fig1_checks.md"],
        ],
    }
    assert set(runs) == set(STAGES)
    for name, argv in runs.items():
        assert main([name, *argv]) == 0, name

    def provenance(path):
        return json.loads(Path(f"{path}.provenance.json").read_text())["spec"]

    # what the rule recorded, beside what the command recorded
    pairs = {
        "data": (res / "data/horizon~4/train.parquet", out["train.parquet"]),
        "select-data": (res / "data/horizon~4/select.parquet", out["select.parquet"]),
        "train": (res / f"train/{cell_dir}/train_log.parquet", out["pre.parquet"]),
        "finetune": (res / f"finetune/{cell_dir}/train_log.parquet", out["ft.parquet"]),
        "evaluate": (res / f"eval/{cell_dir}/metrics.parquet", out["m.parquet"]),
        "select": (res / f"select/{cell_dir}/selection.parquet", out["sel.parquet"]),
    }
    for name, (rule, command) in pairs.items():
        assert provenance(command) == provenance(rule), name
    tables = {
        **{k: v for k, v in pairs.items() if k not in ("train", "finetune")},
        "aggregate": (res / "metrics.parquet", out["metrics.parquet"]),
        "aggregate-selection": (res / "selection.parquet", out["selection.parquet"]),
    }
    for name, (rule, command) in tables.items():
        assert pl.read_parquet(command).equals(pl.read_parquet(rule)), name
    assert Path(out["fig1_checks.md"]).read_text() == (res / "figures" / "fig1_checks.md").read_text()
