"""Planning without torch: config validation and the Snakefile import no torch, numba, Ray or
matplotlib (issue 17, item 2), and what planning computes without them (model sizes, the
registries' planning halves) agrees with the torch classes it stands for."""

import ast
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from covpipe import vectorized
from covpipe.models import MODELS, Vocab, build_model, model_class
from covpipe.models.base import Model
from covpipe.teachers import TEACHERS, build_teacher

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "numba", "ray", "matplotlib", "seaborn")

# Run in a fresh interpreter; prints the heavy modules loaded when the interpreter exits, whatever
# the code did before (Snakemake's main ends in sys.exit).
PROBE = """
import atexit, json, sys
atexit.register(lambda: print("LOADED " + json.dumps(sorted(m for m in {heavy!r} if m in sys.modules))))
{code}
"""


def _loaded(code: str, cwd: Path) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY, code=code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("LOADED ")]
    assert lines, f"the probe did not finish:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1].removeprefix("LOADED "))


@pytest.mark.workflow
@pytest.mark.parametrize("config", ["config/config.yaml", "config/interventions.yaml"])
def test_the_dry_run_imports_no_torch(config, tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((ROOT / config).read_text())
    code = (
        "from snakemake.cli import main\n"
        f"main(['-s', {str(ROOT / 'Snakefile')!r}, '--directory', {str(tmp_path)!r}, '-n', '--cores', '2', "
        "'--quiet', 'rules'])"
    )
    assert _loaded(code, tmp_path) == []


def test_validating_and_building_every_teacher_imports_no_torch():
    code = (
        "from covpipe.config import load_config\n"
        "from covpipe.teachers import TEACHERS, build_teacher\n"
        "for f in ['config/config.yaml', 'config/interventions.yaml']:  # the GPU configs check for a GPU\n"
        "    load_config([f])\n"
        "for name in TEACHERS:\n"
        "    build_teacher({'name': name, **({'lemma': 'I.7', 'horizon': 8, 'n': 64} if name == 'sgd_lower_bound' "
        "else {})})\n"
        "import covpipe.learners, covpipe.models, covpipe.specs, covpipe.cli, covpipe.plots, covpipe.distribute"
    )
    assert _loaded(code, ROOT) == []


def test_the_lazy_tensors_are_the_arrays_they_stand_for():
    t = build_teacher({"name": "ar_linear", "dim": 6, "window": 3})
    theta, table = t.theta, t.features.table
    assert theta is t.theta and table is t.features.table  # made once
    assert theta.dtype == table.dtype == torch.float64
    assert theta.numpy().tobytes() == t.theta_array.tobytes()
    assert table.numpy().tobytes() == t.features.table_array.tobytes()


# Sizes the analytic counts must match: vocabularies, prompt lengths and horizons that differ.
VOCABS = [Vocab(4, 4, 1, 5), Vocab(7, 9, 3, 2), Vocab(3, 5, 0, 11)]
PARAMS = {
    "ar_linear": [{"dim": 5, "window": 3}, {"dim": 2, "window": 1}],
    "gru": [{"embed": 4, "hidden": 8}, {"embed": 3, "hidden": 5, "layers": 3}],
    "transformer": [{"layers": 1, "heads": 2, "width": 8}, {"layers": 3, "heads": 4, "width": 16}],
    "ngram": [{"order": 0}, {"order": 2}],
    "table_per_position": [{"order": 1}, {"order": 2}],
    "rule_mixture": [{}, {"rules": ["match", "uniform4"]}],
    "valid_uniform": [{}],
    "consistent_branch": [{}],
}
GRAPH_ONLY = {"valid_uniform", "consistent_branch", "rule_mixture"}


def test_every_model_class_has_sizes_to_check():
    assert set(PARAMS) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_numel_counts_the_built_models_state(name):
    """The memory estimates read `numel` instead of building the model: it must count exactly
    the parameters and buffers the torch class builds."""
    if name in GRAPH_ONLY:
        teacher = build_teacher({"name": "graph", "num_nodes": 16})
        cases = [(p, Vocab.of(teacher, h)) for p in PARAMS[name] for h in (2, 5)]
    else:
        teacher = None
        cases = list(itertools.product(PARAMS[name], VOCABS))
    for params, vocab in cases:
        spec = MODELS[name]
        model = build_model({"class": name, **params}, vocab, teacher=teacher)
        built = sum(t.numel() for t in model.parameters()) + sum(t.numel() for t in model.buffers())
        assert spec.numel(spec.Params.model_validate({"class": name, **params}), vocab, teacher) == built, (
            params,
            vocab,
        )


def test_numel_of_ar_linear_follows_the_teachers_feature_map():
    for spec in ({"name": "ar_linear", "dim": 7}, {"name": "pivotal"}, {"name": "kl_lower_bound"}):
        teacher = build_teacher(spec)
        vocab = Vocab.of(teacher, 4)
        model = build_model({"class": "ar_linear"}, vocab, teacher=teacher)
        assert MODELS["ar_linear"].numel(MODELS["ar_linear"].Params(), vocab, teacher) == model.theta.numel()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_registered_spec_loads_its_torch_class(name):
    spec, cls = MODELS[name], model_class(name)
    assert issubclass(cls, spec) and issubclass(cls, Model)
    assert cls.Params is spec.Params and cls.trainable == spec.trainable


def test_the_stacked_flag_is_what_the_vectorized_path_covers():
    assert {n for n, s in MODELS.items() if s.stacked} == set(vectorized.STACKED)


def test_the_teacher_registry_is_whole():
    for name, cls in TEACHERS.items():
        assert cls.Params.model_fields["name"].default == name


def _stand_in_names() -> dict[str, set[str]]:
    """{covpipe module: the names bench/planning.py's stand-in of it defines}, read from the source."""
    tree = ast.parse((ROOT / "bench" / "planning.py").read_text())
    (table,) = [n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "STAND_IN"]
    out = {}
    for key, value in zip(table.keys, table.values):
        body = ast.parse(value.value).body
        names = {n.name for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        names |= {t.id for n in body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        out[key.value.removesuffix(".py").replace("__init__", "")] = names
    return out


def _names_the_rules_read() -> set[tuple[str, str]]:
    """(module, name) of every covpipe attribute the Snakefile and rule files use while planning."""
    text = "\n".join(p.read_text() for p in [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))])
    used = set(re.findall(r"\bcovpipe\.(\w+)\.(\w+)", text))
    for module, names in re.findall(r"^\s*from covpipe\.(\w+) import ([\w, ]+)$", text, re.M):
        used |= {(module, n.split(" as ")[0].strip()) for n in names.split(",")}
    return used


def test_the_planning_benchmarks_stand_in_answers_every_call_the_rules_make():
    """bench/planning.py's floor replaces covpipe with a stand-in; a name the rules read that it
    lacks breaks the benchmark (as cell_evaluate_spec once did)."""
    stand_in = _stand_in_names()
    missing = sorted(f"{m}.{n}" for m, n in _names_the_rules_read() if n not in stand_in.get(m, set()))
    assert not missing, f"bench/planning.py's STAND_IN lacks {missing}: add them to its modules"
    assert ("specs", "cell_evaluate_spec") in _names_the_rules_read()  # the reader finds what the rules use
