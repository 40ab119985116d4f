"""The package's shape, as issue 18 asks: no module over 400 lines and no import cycle among
covpipe's modules (an import anywhere in a module counts, a function-local one too); and every
third-party package the run imports declared as a runtime dependency."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from covpipe import fingerprint

MAX_LINES = 400
ROOT = Path(__file__).resolve().parents[1]


def test_no_module_over_400_lines():
    long = {
        name: n for name, path in fingerprint.modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them by what they hold): {long}"


def import_graph() -> dict[str, set[str]]:
    """{module: the covpipe modules it imports anywhere in its source}; `from pkg import name`
    counts as importing pkg.name where that is a module, else pkg."""
    known = fingerprint.modules()
    graph = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for imported in fingerprint._imported_names(tree, package):
            target = imported if imported in known else imported.rpartition(".")[0]
            if target in known and target != name:
                found.add(target)
        graph[name] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, f"import cycles among covpipe modules: {found}"


def _third_party_imports(paths) -> dict[str, str]:
    """{top-level package: a file importing it} of the imports in `paths` that are neither the
    standard library nor covpipe."""
    found = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top not in sys.stdlib_module_names and top not in ("covpipe", "__future__", "snakemake"):
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def _distribution(requirement: str) -> str:
    return re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_every_package_the_run_imports_is_a_runtime_dependency():
    """`make run` installs `dependencies` only, not the test extras: a package covpipe or a workflow
    script imports that only the extras bring would pass the suite and fail the study."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_distribution(r) for r in project["dependencies"]}
    paths = [*fingerprint.modules().values(), *sorted((ROOT / "workflow" / "scripts").glob("*.py"))]
    owners = importlib.metadata.packages_distributions()
    undeclared = {
        top: where
        for top, where in _third_party_imports(paths).items()
        if not {d.lower().replace("_", "-") for d in owners.get(top, [top])} & declared
    }
    assert not undeclared, f"imported by the run but not in pyproject's dependencies: {undeclared}"
