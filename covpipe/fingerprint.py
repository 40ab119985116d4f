"""The code a job runs, as one fingerprint: a hash of the syntax trees (docstrings and comments
left out) of every covpipe module its stage's entry module imports, directly or through others.
Every stage spec carries its job's fingerprint, so an edit reruns exactly the jobs whose code
changed, and a comment or docstring edit reruns nothing.

Imports are read from the source, never executed (Snakemake computes fingerprints while it plans,
without torch): `import covpipe.x`, `from . import x`, `from .x import y`, at any depth in a
module, so imports made inside functions count. Importing a package counts as importing every
module of it (registries load their entries' modules by name), except the root package `covpipe`.
The modules of registry entries a job does not use (another teacher, model class or learner) are
left out, unless a module it uses imports them: editing one teacher reruns its studies only. An
entry's helper modules, named after it (teachers/graph_sampling.py of teachers/graph.py), go with it.
A plugin's entry (covpipe.registry) counts with the module that holds it, alone: an edit there
reruns its jobs; an edit in another module of the plugin's package does not.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
import tempfile
from functools import cache
from importlib.util import find_spec
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.name  # "covpipe"

STAGES = {  # stage: the module its job runs
    "data": "covpipe.data",
    "select_data": "covpipe.data",
    "train": "covpipe.train",
    "finetune": "covpipe.finetune",
    "evaluate": "covpipe.evaluate",
    "select": "covpipe.selection",
    "aggregate": "covpipe.aggregate",
    "plot": "covpipe.plots",
}


@cache
def modules() -> dict[str, Path]:
    """{dotted name: source file} of every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _strip_docstrings(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _hash(tree: ast.Module) -> str:
    return hashlib.sha256(ast.dump(_strip_docstrings(tree), include_attributes=False).encode()).hexdigest()


def source_hash(source: str) -> str:
    """sha256 of a module's syntax tree without docstrings: comments, blank lines, formatting and
    docstrings change nothing."""
    return _hash(ast.parse(source))


def _imported_names(tree: ast.Module, package: str) -> set[str]:
    """Dotted names of what `tree` imports anywhere (relative imports resolved against `package`)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names}
    return found


@cache
def _module(name: str) -> tuple[frozenset[str], str]:
    """(the covpipe modules `name` imports anywhere in its source, with the packages holding them;
    the hash of its syntax tree), from one parse, or from the cache when the source is unchanged."""
    known = modules()
    source = known[name].read_bytes()
    key = f"{name}:{hashlib.sha256(source).hexdigest()}"
    cached = _cache().get(key)
    if cached is None:
        tree = ast.parse(source, filename=str(known[name]))
        package = name if known[name].name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for module in _imported_names(tree, package):
            parts = module.split(".")
            found |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}  # its packages, the root left out
        cached = _cache()[key] = [sorted(found), _hash(tree)]
    found, digest = cached
    return frozenset(m for m in found if m in known and m != name), digest


# Parsing every module costs a few tenths of a second per plan; the cache keeps each module's
# result by the hash of its source (and of this module's, and the Python version: ast.dump's form).
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "covpipe" / "fingerprints.json"


@cache
def _stamp() -> str:
    return (
        f"{hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}:{sys.version_info.major}.{sys.version_info.minor}"
    )


@cache
def _cache() -> dict:
    """{"module:source sha256": [imports, tree hash]}: the cache file's, or empty where there is none."""
    try:
        data = json.loads(CACHE.read_text())
        if data.get("stamp") == _stamp():
            return data["modules"]
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass  # no cache, or one of other code: start afresh
    return {}


def _save_cache() -> None:
    """Write the cache atomically; where it cannot be written, planning goes on without it."""
    try:
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=CACHE.parent, delete=False, suffix=".tmp") as f:
            json.dump({"stamp": _stamp(), "modules": _cache()}, f)
        os.replace(f.name, CACHE)
    except OSError:
        pass


def tree_hash(name: str) -> str:
    """`source_hash` of a covpipe module, by dotted name."""
    return _module(name)[1]


def imports(name: str) -> frozenset[str]:
    """The covpipe modules `name` imports anywhere in its source (and the packages holding them)."""
    return _module(name)[0]


@cache
def closure(name: str, unused: frozenset[str] = frozenset()) -> frozenset[str]:
    """`name` and every covpipe module it imports, transitively; a package brings all its modules;
    modules in `unused` are not entered unless `name` is one of them."""
    known = modules()
    seen, stack = set(), [name]
    while stack:
        module = stack.pop()
        if module in seen or (module in unused and module != name):
            continue
        seen.add(module)
        stack += imports(module)
        if known[module].name == "__init__.py" and module != ROOT:
            stack += [m for m in known if m.rpartition(".")[0] == module]
    return frozenset(seen)


def _entry_modules() -> dict[tuple[str, str], str]:
    """{(kind, name): the module holding that registry entry's code}."""
    from .learners import LEARNERS
    from .models import MODELS
    from .teachers import TEACHERS

    out = {("teacher", n): c.__module__ for n, c in TEACHERS.items()}
    out |= {("learner", n): c.__module__ for n, c in LEARNERS.items()}
    out |= {("model", n): s.impl_module() for n, s in MODELS.items()}
    return out


@cache
def of_job(stage: str, uses: frozenset[tuple[str, str]] = frozenset()) -> str:
    """The fingerprint of the code a job of `stage` runs, 16 hex digits. uses: the registry entries
    the job reads, as (kind, name) with kind teacher, model or learner; the others' modules are
    left out."""
    known = len(_cache())  # parsed modules so far: new ones are saved for the next plan
    entries = _entry_modules()
    wanted = {m for key, m in entries.items() if key in uses}
    unused = frozenset(
        m for m in modules() for e in set(entries.values()) - wanted if m == e or m.startswith(f"{e}_")
    )  # with their helpers, graph_*.py of graph.py
    ours = {m for m in wanted if m in modules()}
    modules_ = closure(STAGES[stage], unused) | frozenset().union(*(closure(m, unused) for m in ours))
    digest = hashlib.sha256()
    for module in sorted(modules_):
        digest.update(f"{module}:{tree_hash(module)}\n".encode())
    for module in sorted(wanted - ours):  # a plugin's entry module: its own code, not what it imports
        digest.update(f"{module}:{source_hash(Path(find_spec(module).origin).read_text())}\n".encode())
    if len(_cache()) != known:
        _save_cache()
    return digest.hexdigest()[:16]
