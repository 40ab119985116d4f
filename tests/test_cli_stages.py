"""`covpipe <stage>` by hand builds the spec the workflow rule builds, so a stage run from the command
line writes what the workflow would."""

import copy
import json

import yaml

from covpipe import finetune, specs
from covpipe.cli import main
from covpipe.config import load_config

from test_selection import FIG1


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
    assert main(["data", *cell, "--train", str(tmp_path / "train.parquet"), "--eval", str(tmp_path / "eval.parquet")]) == 0
    assert main(["train", *cell, "--model", "transformer", "--data", str(tmp_path / "train.parquet"),
                 "--checkpoints", str(tmp_path / "pre.pt"), "--log", str(tmp_path / "pre_log.parquet")]) == 0
    resolved = load_config(config)["studies"]["f1"]
    ft_spec = specs.finetune_spec("f1", resolved, "transformer", 4)
    finetune.run(tmp_path / "pre.pt", tmp_path / "ft.pt", tmp_path / "ft_log.parquet", ft_spec, backend="serial")
    assert main(["evaluate", *cell, "--model", "transformer", "--eval", str(tmp_path / "eval.parquet"),
                 "--checkpoints", str(tmp_path / "ft.pt"), "--metrics", str(tmp_path / "m.parquet"),
                 "--log-ratios", str(tmp_path / "r.parquet")]) == 0
    written = json.loads((tmp_path / "m.parquet.provenance.json").read_text())["spec"]
    want = json.loads(json.dumps(specs.evaluate_spec(ft_spec, resolved["evaluate"]), default=str))
    assert written == want
    assert written["teacher"]["classes"] == {"match": 0.9, "mismatch": 0.1} and "pretrain" in written
