"""The suite's own rules: every test that starts Snakemake, Ray or SLURM is marked `workflow`, so
`pytest -m "not workflow"` is the fast unit run; every test has a timeout (pyproject.toml)."""

import ast
import tomllib
from pathlib import Path

TESTS = Path(__file__).parent
# Names whose use starts Snakemake, Ray or SLURM, or needs a study they ran.
STARTERS = {"snakemake", "SNAKEMAKE", "planned_jobs", "planned_inputs", "finished", "ray_cluster", "slurm_cluster"}


def _marked_workflow(decorators) -> bool:
    return any("workflow" in ast.unparse(d) for d in decorators)


def _starts(node, helpers, signatures=None) -> bool:
    """Whether a function's parameters or body use a starter, call a helper that does, or ask for
    the Ray backend (backend="ray", or "ray" passed to a local function's `backend` parameter).
    signatures: {local function: its parameter names}."""
    params = {a.arg for a in node.args.args}
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and (sub.id in STARTERS or sub.id in helpers):
            return True
        if isinstance(sub, ast.Call):
            if any(
                k.arg == "backend" and isinstance(k.value, ast.Constant) and k.value.value == "ray"
                for k in sub.keywords
            ):
                return True
            names = (signatures or {}).get(getattr(sub.func, "id", None), [])
            if any(
                isinstance(a, ast.Constant) and a.value == "ray" and i < len(names) and names[i] == "backend"
                for i, a in enumerate(sub.args)
            ):
                return True
    return bool(params & STARTERS)


def unmarked_starters() -> list[str]:
    out = []
    for path in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        module_marked = any(
            isinstance(n, ast.Assign)
            and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
            and "workflow" in ast.unparse(n.value)
            for n in tree.body
        )
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        signatures = {f.name: [a.arg for a in f.args.args] for f in functions}
        helpers = set()
        for _ in range(3):  # helpers that call helpers
            helpers |= {f.name for f in functions if not f.name.startswith("test_") and _starts(f, helpers, signatures)}
        for f in functions:
            if (
                f.name.startswith("test_")
                and not module_marked
                and not _marked_workflow(f.decorator_list)
                and _starts(f, helpers, signatures)
            ):
                out.append(f"{path.name}::{f.name}")
    return out


def test_every_test_that_starts_snakemake_ray_or_slurm_is_marked_workflow():
    assert unmarked_starters() == []


def test_the_check_sees_a_starter():
    tree = ast.parse("def test_x(tmp_path):\n    run_trials(f, [], backend='ray')\n")
    assert _starts(tree.body[0], set())
    tree = ast.parse("def test_z(tmp_path):\n    tables(tmp_path, 'ray')\n")
    assert _starts(tree.body[0], set(), {"tables": ["tmp", "backend"]})
    assert not _starts(tree.body[0], set(), {"tables": ["tmp", "name"]})
    tree = ast.parse("def test_y(tmp_path):\n    assert resolve_backend('auto', 4, 8) == 'ray'\n")
    assert not _starts(tree.body[0], set())


def test_every_test_has_a_timeout():
    options = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert 0 < int(options["timeout"]) <= 900


def test_the_test_extras_leave_out_the_slurm_plugin_that_makes_every_snakemake_start_wait():
    """The slurm executor plugin runs `scontrol show config` whenever Snakemake starts (9 s where
    SLURM's client has no controller): only the `slurm` extra installs it; test_slurm.py adds it."""
    extras = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("snakemake-executor-plugin-slurm") for r in extras["slurm"])
    assert not [r for r in extras["test"] if r.startswith("snakemake-executor-plugin-slurm")]
