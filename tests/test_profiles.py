"""The workflow profiles name the resources the rules declare, for every rule that needs them.

A resource a profile caps under another name than the rules' (`gpus` for `gpu`) caps nothing: the
scheduler then starts as many GPU jobs as cores allow. Read statically from the rule files and the
profiles, so the check runs in milliseconds."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]


def rule_blocks() -> dict[str, str]:
    """{rule name: its text} of every rule in workflow/rules/*.smk."""
    blocks = {}
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        parts = re.split(r"^rule (\w+):\n", path.read_text(), flags=re.M)
        blocks.update(dict(zip(parts[1::2], parts[2::2])))
    return blocks


def trial_rules() -> set[str]:
    """Rules whose job runs trials through covpipe.distribute (its script passes execution settings)."""
    out = set()
    for name, text in rule_blocks().items():
        m = re.search(r'script:\s*"\.\./scripts/(\w+)\.py"', text)
        if m and "execution_settings" in (ROOT / "workflow" / "scripts" / f"{m.group(1)}.py").read_text():
            out.add(name)
    return out


def declared_resources() -> dict[str, set[str]]:
    """{rule: names in its `resources:` block}."""
    out = {}
    for name, text in rule_blocks().items():
        m = re.search(r"^    resources:\n((?:        .*\n)+)", text, flags=re.M)
        out[name] = set(re.findall(r"^\s+(\w+)=", m.group(1), flags=re.M)) if m else set()
    return out


def profile(name: str) -> dict:
    return yaml.safe_load((ROOT / "profiles" / name / "config.yaml").read_text())


def test_trial_rules_are_found():
    assert {"train", "finetune", "evaluate"} <= trial_rules()


def test_every_rule_that_runs_trials_asks_for_a_gpu_by_the_same_name():
    declared = declared_resources()
    assert {rule for rule, names in declared.items() if "gpu" in names} == trial_rules()


@pytest.mark.parametrize("name", ["gpu", "ray", "slurm", "default"])
def test_profiles_cap_and_set_only_resources_the_rules_declare(name):
    """A global cap (`resources:`) or a per-rule value (`set-resources:`) under a name no rule declares
    is silently ignored; ray_drivers and the SLURM executor's own keys are the profile's to define."""
    p = profile(name)
    declared = set().union(*declared_resources().values())
    own = {"ray_drivers", "mem_mb", "runtime", "slurm_account", "slurm_partition", "cpus_per_task"}
    capped = {item.split("=")[0] for item in p.get("resources", [])}
    assert capped <= declared | own, (
        f"profiles/{name}: resources {sorted(capped - declared - own)} are declared by no rule"
    )
    for rule, values in (p.get("set-resources") or {}).items():
        assert rule in rule_blocks(), f"profiles/{name}: set-resources: no rule '{rule}'"
        unknown = set(values) - declared - own
        assert not unknown, f"profiles/{name}: set-resources.{rule}: {sorted(unknown)} are declared by no rule"


def test_gpu_profile_caps_the_gpu_for_every_job_that_can_use_it():
    p = profile("gpu")
    caps = [int(item.split("=")[1]) for item in p["resources"] if item.startswith("gpu=")]
    assert len(caps) == 1 and caps[0] >= 1  # a cap under the rules' own name (jobs may share the one GPU)
    for rule in trial_rules():
        assert p["set-resources"].get(rule, {}).get("gpu") == 1, f"profiles/gpu: set-resources.{rule}.gpu"


def test_ray_profile_counts_every_job_that_drives_the_cluster():
    p = profile("ray")
    for rule in trial_rules():
        assert p["set-resources"].get(rule, {}).get("ray_drivers") == 1, (
            f"profiles/ray: set-resources.{rule}.ray_drivers"
        )
