"""Bad configs get one clear message naming the key; registries and schema agree."""

from pathlib import Path

import pytest
import yaml
from helpers import mini_config

from covpipe.config import ConfigError, load_config, validate_config
from covpipe.models import MODELS
from covpipe.teachers import TEACHERS


def test_mini_config_is_valid_and_filled_with_defaults():
    cfg = validate_config(mini_config())
    study = cfg["studies"]["mini"]
    assert study["teacher"]["alpha"] == 0.5
    assert study["models"]["gru"]["train"]["checkpoints"] == [5, 20]
    assert study["models"]["gru"]["train"]["batch_size"] == 8  # inherited from the study
    assert cfg["execution"]["ray_address"] == "local"


def test_registries_are_the_schema_choices():
    with pytest.raises(ConfigError) as exc:
        validate_config(mini_config(models={"x": {"class": "nope"}}))
    assert exc.value.args[0].endswith("known: " + ", ".join(sorted(MODELS)))
    with pytest.raises(ConfigError) as exc:
        validate_config(mini_config(teacher={"name": "nope"}))
    assert exc.value.args[0].endswith("known: " + ", ".join(sorted(TEACHERS)))


BAD = [
    ({"horizons": [2, -4]}, r"studies\.mini\.horizons\[1\]: horizon must be >= 1, got -4"),
    ({"horizons": []}, r"studies\.mini\.horizons: empty"),
    ({"horizons": [2, 2]}, r"studies\.mini\.horizons: duplicate horizons"),
    ({"horizons": "8"}, r"studies\.mini\.horizons: Input should be a valid list"),
    ({"seeds": 0}, r"studies\.mini\.seeds: .*greater than or equal to 1"),
    (
        {"models": {"m": {"class": "gru2"}}},
        r"studies\.mini\.models\.m\.class: unknown model class 'gru2'; known: ar_linear, consistent_branch, gru",
    ),
    ({"models": {"m": {"class": "gru", "hiden": 3}}}, r"studies\.mini\.models\.m\.hiden: unknown key"),
    ({"teacher": {"name": "markov", "vocab_size": "big"}}, r"studies\.mini\.teacher\.vocab_size: .*valid integer"),
    ({"train": {"lr": float("nan")}}, r"studies\.mini\.train\.lr: "),
    ({"train": {"lr": -1.0}}, r"studies\.mini\.train\.lr: .*greater than 0"),
    ({"train": {"batch_size": 0}}, r"studies\.mini\.train\.batch_size: "),
    (
        {"train": {"steps": 10, "checkpoints": [5, 20]}},
        r"studies\.mini\.train: .*step 20 is beyond the training length",
    ),
    ({"train": {"checkpoints": [20, 5]}}, r"studies\.mini\.train: .*strictly increasing"),
    ({"evaluate": {"levels": [0.5, 2]}}, r"studies\.mini\.evaluate\.levels: every level N must be >= 1, got 0.5"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[m.split(":")[0].replace("\\", "") for _, m in BAD])
def test_bad_study_setting_names_the_key(change, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(mini_config(**change), source="cfg.yaml")


def test_unknown_top_level_key_suggests_the_nearest():
    cfg = mini_config()
    cfg["studys"] = cfg.pop("studies")
    with pytest.raises(ConfigError, match=r"cfg.yaml: studys: unknown top-level key; did you mean 'studies'\?"):
        validate_config(cfg, source="cfg.yaml")


def test_missing_and_non_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("studies: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_config(bad)


def test_default_config_is_valid():
    cfg = load_config(Path(__file__).parents[1] / "config" / "config.yaml")
    assert len(cfg["studies"]) >= 2
    horizon_studies = [s for s in cfg["studies"].values() if "horizon" in s["figures"]]
    assert {s["teacher"]["name"] for s in horizon_studies} == {"markov", "ar_linear"}
    for study in horizon_studies:
        assert min(study["horizons"]) <= 4 and max(study["horizons"]) >= 128 and study["seeds"] >= 5
        assert len(study["models"]) >= 3
    graph = [s for s in cfg["studies"].values() if s["teacher"]["name"] == "graph"]
    assert graph and graph[0]["horizons"] == [8, 16, 24] and graph[0]["figures"] == ["training"]
    yaml.safe_dump(cfg)  # plain builtins all the way down
