"""The learning-rate schedule of the optimizer loops: closed forms, validation, and that a
configured default leaves every spec as it was (no rerun of existing studies)."""

import math

import pytest

from covpipe.config import ConfigError, validate_config
from covpipe.specs import train_spec
from covpipe.training import lr_at


def test_cosine_schedule_warms_up_linearly_then_decays_to_its_floor():
    cfg = {"lr": 0.01, "steps": 110, "schedule": "cosine", "warmup": 10, "min_lr_ratio": 0.1}
    assert [lr_at(cfg, s) for s in (1, 5, 10)] == pytest.approx([0.001, 0.005, 0.01])
    assert lr_at(cfg, 60) == pytest.approx(0.01 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2))))  # half way: 0.0055
    assert lr_at(cfg, 110) == pytest.approx(0.001)
    lrs = [lr_at(cfg, s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lr_at({"lr": 0.01, "steps": 5}, 3) == 0.01  # constant by default


def _study(**train):
    return {
        "studies": {
            "s": {
                "teacher": {"name": "markov", "vocab_size": 4, "order": 1},
                "horizons": [4],
                "seeds": 1,
                "models": {"m": {"class": "gru"}},
                "train": {"steps": 20, "checkpoints": [20], **train},
            }
        }
    }


def test_the_default_schedule_leaves_the_training_spec_unchanged():
    spec = train_spec("s", validate_config(_study())["studies"]["s"], "m", 4)
    assert not {"schedule", "warmup", "min_lr_ratio"} & set(spec["train"])
    spec = train_spec("s", validate_config(_study(schedule="cosine", warmup=5))["studies"]["s"], "m", 4)
    assert spec["train"]["schedule"] == "cosine" and spec["train"]["warmup"] == 5


def test_a_schedule_without_room_to_decay_is_refused():
    with pytest.raises(ConfigError, match=r"studies\.s\.train: warmup: 20 warm-up steps leave none of steps=20"):
        validate_config(_study(schedule="cosine", warmup=20))
