"""The GPU reference run (scripts/gpu-run.sh, config/gpu.yaml) works the first time: its config
validates, its miniature differs from it in sizes only, and the same script run on a CPU at the
miniature's scale publishes reference/{study}/ with the tables, figures and provenance."""

import copy
import json
import os
import subprocess
import tarfile
from pathlib import Path

import polars as pl
import pytest
import yaml

from covpipe.config import validate_config

ROOT = Path(__file__).parents[1]
GPU = ROOT / "config" / "gpu.yaml"
MINI = ROOT / "config" / "gpu-mini.yaml"
SCRIPT = ROOT / "scripts" / "gpu-run.sh"
SIZES = {
    "seeds",
    "n_train",
    "n_eval",
    "steps",
    "checkpoints",
    "batch_size",
    "layers",
    "heads",
    "width",
    "n_select",
    "offset_prompts",
}


def _load(path):
    return yaml.safe_load(path.read_text())


def test_gpu_config_validates_with_the_gpu_check_deferred():
    raw = _load(GPU)
    assert raw["execution"]["device"] == "cuda"
    raw["execution"]["device_check"] = "in_jobs"  # no GPU here: each job would check its own
    cfg = validate_config(raw, source=str(GPU))
    fig2, fig1 = cfg["studies"]["graph_horizon_gpu"], cfg["studies"]["graph_finetune_gpu"]
    for study in (fig1, fig2):  # the paper's format and model
        assert study["teacher"]["prompt_format"] == "edges" and study["teacher"]["response_format"] == "path"
        assert study["models"]["transformer"] | {"dropout": 0.0} == {
            "class": "transformer",
            "layers": 6,
            "heads": 4,
            "width": 384,
            "dropout": 0.0,
        }
        assert study["train"]["optimizer"] == "adamw" and study["train"]["batch_size"] == 128
    assert fig2["horizons"] == [8, 16, 24] and set(fig2["teacher"]["classes"]) == {"single", "xor", "uniform16"}
    assert fig1["finetune"]["teacher"]["classes"] == {"match": 0.9, "mismatch": 0.1}
    assert len(fig1["finetune"]["train"]["checkpoints"]) >= 20
    assert fig1["finetune"]["seeds"] >= 2 * fig1["seeds"] >= 4  # 2 pre-trainings x 2 fine-tunings at least
    assert fig1["models"]["rule_mixture"]["finetune"]["optimizer"] == "adam"
    assert fig1["selection"]["n_select"] >= 512


def test_gpu_config_validates_as_a_cpu_run():
    raw = _load(GPU)
    raw["execution"]["device"] = "cpu"  # what `scripts/gpu-run.sh --device cpu` writes
    assert validate_config(raw, source=str(GPU))["execution"]["device"] == "cpu"


def _structure(node, key=None):
    """The config with every size replaced by '*'."""
    if key in SIZES:
        return "*"
    if isinstance(node, dict):
        return {k: _structure(v, k) for k, v in node.items()}
    return node


def test_gpu_mini_differs_from_gpu_in_sizes_only():
    gpu, mini = _load(GPU), _load(MINI)
    assert mini["execution"] == gpu["execution"]
    mini_fig2 = mini["studies"]["graph_horizon_gpu"]
    assert set(mini_fig2.pop("horizons")) < set(gpu["studies"]["graph_horizon_gpu"].pop("horizons"))
    assert _structure(mini["studies"]) == _structure(gpu["studies"])


@pytest.mark.workflow
def test_gpu_run_script_publishes_reference_on_cpu(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out)}
    proc = subprocess.run(
        [
            "bash",
            str(SCRIPT),
            "--config",
            str(MINI),
            "--device",
            "cpu",
            "--workdir",
            str(tmp_path / "run"),
            "--out",
            str(tmp_path / "reference"),
            "--cores",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=1500,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    cfg = _load(MINI)
    for study, figures in [
        ("graph_horizon_gpu", {"over_training.png", "coverage_profile.png", "per_class.md"}),
        ("graph_finetune_gpu", {"fig1_training.png", "fig1_scatter.png", "selection.md"}),
    ]:
        ref = tmp_path / "reference" / study
        tables = {"metrics.parquet", "train_log.parquet"} | (
            {"selection.parquet"} if "selection" in cfg["studies"][study] else set()
        )
        assert tables <= {p.name for p in ref.glob("*.parquet")}
        assert figures <= {p.name for p in (ref / "figures").iterdir()}
        assert (
            ref / "figures" / "fig1_training.png" if "finetune" in study else ref / "figures" / "over_training.png"
        ).read_bytes()[:4] == b"\x89PNG"
        metrics = pl.read_parquet(ref / "metrics.parquet")
        assert set(metrics["study"]) == {study} and set(metrics["model"]) == set(cfg["studies"][study]["models"])
        prov = json.loads((ref / "provenance.json").read_text())
        for key in (
            "command",
            "config",
            "config_file",
            "config_sha256",
            "machine",
            "wall_seconds",
            "covpipe_version",
            "git_commit",
            "exit_code",
            "complete",
            "files",
            "stage_seconds",
        ):
            assert key in prov, key
        assert prov["complete"] and prov["exit_code"] == 0 and prov["missing"] == []
        assert prov["config"]["models"].keys() == cfg["studies"][study]["models"].keys()
        assert prov["machine"]["device"] == "cpu" and prov["machine"]["device_name"]
        assert prov["execution"]["device"] == "cpu"  # the device the run was told, not the file's cuda
        assert "gpu-run.sh" in prov["command"] and "snakemake" in prov["command"]
        assert prov["wall_seconds"] > 0 and prov["stage_seconds"]["train"] > 0
        assert len(prov["git_commit"]) >= 40 or prov["git_commit"].startswith("unknown")
        assert (out / f"{study}.provenance.json").exists()
    # Only the aggregated outputs travel: no checkpoints, no per-sequence tables.
    assert not list((tmp_path / "reference").rglob("*.pt")) and not list((tmp_path / "reference").rglob("log_ratios*"))
    with tarfile.open(out / "reference.tar.gz") as tar:
        names = tar.getnames()
    assert "reference/graph_finetune_gpu/selection.parquet" in names
    assert (out / "gpu-run.log").exists() and not (out / "logs.tar.gz").exists()


def test_gpu_run_script_names_a_bad_device_before_running(tmp_path):
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--device", "tpu", "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "--device: 'tpu'; known: cuda, cpu" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_publish_marks_a_study_with_missing_outputs_incomplete(tmp_path):
    """A time-limited run: one study finished, one stopped before its selection, one never started."""
    from covpipe.reference import publish

    cfg = _load(MINI)
    cfg["studies"]["not_started"] = copy.deepcopy(cfg["studies"]["graph_horizon_gpu"])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    results = tmp_path / "results"
    for study, tables in [
        ("graph_horizon_gpu", ["metrics.parquet", "train_log.parquet"]),
        ("graph_finetune_gpu", ["metrics.parquet", "train_log.parquet"]),
    ]:
        (results / study / "figures").mkdir(parents=True)
        for t in tables:
            (results / study / t).write_bytes(b"PAR1")
        (results / study / "figures" / "a.png").write_bytes(b"\x89PNG")
    (results / "graph_finetune_gpu" / "train" / "model~transformer").mkdir(parents=True)
    (results / "graph_finetune_gpu" / "train" / "model~transformer" / "checkpoints.pt").write_bytes(b"x")
    done = publish(tmp_path, tmp_path / "ref", config, command="test", wall_seconds=1.0, exit_code=124, device="cpu")
    assert set(done) == {"graph_horizon_gpu", "graph_finetune_gpu"}
    assert done["graph_finetune_gpu"]["missing"] == ["selection.parquet"]
    assert done["graph_horizon_gpu"]["missing"] == [] and not done["graph_horizon_gpu"]["complete"]  # exit 124
    assert sorted(p.name for p in (tmp_path / "ref" / "graph_finetune_gpu").rglob("*")) == [
        "a.png",
        "figures",
        "metrics.parquet",
        "provenance.json",
        "train_log.parquet",
    ]
