"""Models and stages on a device other than the CPU: every tensor a model makes follows its
parameters. On a CPU-only machine the `meta` device stands in for an accelerator (shapes only, no
data); with a GPU that torch sees, `device: cuda` runs for real and must give the CPU's numbers."""

import numpy as np
import polars as pl
import pytest
import torch
from helpers import mini_config

from covpipe import data, evaluate, specs, train
from covpipe.config import validate_config
from covpipe.models import Vocab, build_model
from covpipe.models.base import as_tensor
from covpipe.teachers import build_teacher

GPU = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="torch sees no CUDA GPU here (torch.cuda.is_available())"
)


def test_gru_builds_its_start_token_on_the_models_device():
    """The GRU reads BOS ++ x ++ y: its BOS column must be made where the prompt lives, or a GRU
    evaluated on a GPU mixes devices."""
    teacher = build_teacher({"name": "markov", "vocab_size": 4, "order": 1})
    batch = teacher.sample(5, 3, np.random.default_rng(0))
    model = build_model({"class": "gru", "hidden": 8, "embed": 4}, Vocab.of(teacher, 3)).to("meta")
    out = model.step_log_probs(as_tensor(batch.prompt).to("meta"), as_tensor(batch.response).to("meta"))
    assert out.device.type == "meta" and out.shape == (5, 3, 4)


def _stage_tables(tmp, device):
    """Train and evaluate a GRU and a graph transformer of a miniature study on `device`."""
    out = {}
    for name, teacher, model in [
        (
            "gru",
            {"name": "markov", "vocab_size": 4, "order": 1, "classes": {"a": 0.5, "b": 0.5}},
            {"class": "gru", "hidden": 16, "embed": 8},
        ),
        (
            "transformer",
            {"name": "graph", "num_nodes": 20, "classes": {"single": 0.5, "xor": 0.5}},
            {"class": "transformer", "layers": 1, "heads": 2, "width": 16},
        ),
    ]:
        cfg = validate_config(
            mini_config(
                teacher=teacher,
                horizons=[4],
                models={name: model},
                evaluate={
                    "levels": [2],
                    "stopped_kl_levels": [4],
                    **({"pass_at": [1, 4]} if name == "transformer" else {}),
                },
            )
        )
        study = cfg["studies"]["mini"]
        d = tmp / name
        d.mkdir(parents=True)
        data.run(d / "train.parquet", d / "eval.parquet", specs.data_spec("mini", study, 4))
        spec = specs.train_spec("mini", study, name, 4)
        train.run(d / "train.parquet", d / "c.pt", d / "l.parquet", spec, backend="serial", device=device)
        evaluate.run(
            d / "eval.parquet",
            d / "c.pt",
            d / "m.parquet",
            d / "r.parquet",
            specs.evaluate_spec(spec, study["evaluate"]),
            backend="serial",
            device=device,
        )
        out[name] = pl.read_parquet(d / "m.parquet")
    return out


@GPU
def test_device_cuda_trains_and_evaluates_to_the_cpus_numbers(tmp_path):
    """device: cuda for real: training and evaluation run on the GPU (no device mix-up), and the
    metric table matches the CPU's within float32 tolerance (GPU kernels round differently)."""
    cpu = _stage_tables(tmp_path / "cpu", "cpu")
    gpu = _stage_tables(tmp_path / "gpu", "cuda")
    keys = ["seed", "step", "class", "metric", "level"]
    for name in cpu:
        a, b = cpu[name].sort(keys), gpu[name].sort(keys)
        assert a.select(keys).equals(b.select(keys))
        # Continuous metrics only: coverage and token accuracy count thresholds and argmaxes, which a
        # last-bit difference may flip for one sequence.
        smooth = pl.col("metric").is_in(["kl", "ce", "entropy", "stopped_kl", "pass_at_n"])
        np.testing.assert_allclose(
            b.filter(smooth)["value"].to_numpy(),
            a.filter(smooth)["value"].to_numpy(),
            rtol=1e-3,
            atol=1e-4,
            err_msg=name,
        )
