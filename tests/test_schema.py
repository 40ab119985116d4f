"""The config's JSON schema (issue 18, item 5): generated from covpipe's pydantic models, committed
at workflow/schemas/config.schema.json, every field described, the shipped configs valid under it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from covpipe import strict_yaml
from covpipe.learners import LEARNERS
from covpipe.models import MODELS
from covpipe.teachers import TEACHERS

ROOT = Path(__file__).parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.json"
REGENERATE = "covpipe schema --out workflow/schemas/config.schema.json"
SHIPPED = sorted((ROOT / "config").glob("*.yaml"))


def test_the_committed_schema_is_the_generated_one():
    # a fresh process: the command leaves installed plugins out whatever this one has loaded
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "covpipe.cli", "schema"], capture_output=True, text=True, env=env, check=True
    )
    assert proc.stdout == SCHEMA.read_text(), f"{SCHEMA.relative_to(ROOT)} is out of date; run `{REGENERATE}`"


def _properties(node, where="config"):
    if isinstance(node, dict):
        for key, value in node.get("properties", {}).items():
            yield f"{where}.{key}", value
        for key, value in node.items():
            yield from _properties(value, f"{where}.{key}" if key not in ("properties", "$defs") else where)
    elif isinstance(node, list):
        for value in node:
            yield from _properties(value, where)


def test_every_field_has_a_description():
    missing = sorted(
        {where for where, prop in _properties(json.loads(SCHEMA.read_text())) if "description" not in prop}
    )
    assert not missing, f"fields without Field(description=...): {missing}"


def test_the_schema_offers_every_registry_entry():
    schema = json.loads(SCHEMA.read_text())
    study = schema["$defs"]["Study"]["properties"]
    assert set(study["teacher"]["discriminator"]["mapping"]) == set(TEACHERS)
    assert set(study["models"]["additionalProperties"]["discriminator"]["mapping"]) == set(MODELS)
    learner = schema["$defs"]["Train"]["properties"]["learner"]["anyOf"][0]
    assert set(learner["discriminator"]["mapping"]) == set(LEARNERS)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_configs_name_the_schema_and_are_valid_under_it(path):
    assert path.read_text().splitlines()[0] == "# yaml-language-server: $schema=../workflow/schemas/config.schema.json"
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(strict_yaml.load(path))


def test_the_schema_refuses_what_covpipe_refuses():
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    study = {"teacher": {"name": "markov"}, "horizons": [2], "models": {"m": {"class": "gru", "hiden": 3}}}
    assert not validator.is_valid({"studies": {"s": study}})
    study["models"]["m"] = {"hidden": 3}  # an entry must name its class
    assert not validator.is_valid({"studies": {"s": study}})
    study["models"]["m"] = {"class": "gru", "hidden": 3, "train": {"lr": 0.1}, "learner": {"name": "adam"}}
    assert validator.is_valid({"studies": {"s": study}})
