"""Registries of teachers, model classes and learners: name -> class, the built-ins each package
lists in its `__init__.py` plus those other installed packages declare as Python entry points
(groups `covpipe.teachers`, `covpipe.models`, `covpipe.learners`; README, "Extending").

Plugins load on the first read of a registry, once per process, not when it is imported: a
plugin's module may import covpipe's own (`covpipe.teachers.base`) without a cycle. Setting
COVPIPE_PLUGINS=0 leaves every plugin out (the committed config schema holds the built-ins only).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import get_args

PLUGINS_ENV = "COVPIPE_PLUGINS"


class PluginError(RuntimeError):
    """An installed plugin that cannot be used; its message is one line naming the plugin."""


class Registry(Mapping):
    """name -> class of one kind (teacher, model class, learner): the built-ins, then the plugins.

    kind: the words messages use ("model class"); group: the entry-point group; key: the config
    key that names an entry, which each entry's `Params` declares as a Literal of its own name.
    """

    def __init__(self, kind: str, group: str, key: str, builtins: dict[str, type]):
        self.kind, self.group, self.key = kind, group, key
        self.builtins = dict(builtins)
        self._entries: dict[str, type] | None = None
        self.plugins: dict[str, str] = {}  # name -> the distribution that registered it

    def _all(self) -> dict[str, type]:
        if self._entries is None:
            entries = dict(self.builtins)
            if os.environ.get(PLUGINS_ENV, "1") != "0":
                for name, (cls, dist) in self._load_plugins().items():
                    entries[name] = cls
                    self.plugins[name] = dist
            self._entries = entries
        return self._entries

    def _load_plugins(self) -> dict[str, tuple[type, str]]:
        from importlib.metadata import entry_points

        found: dict[str, tuple[type, str]] = {}
        for ep in entry_points(group=self.group):
            dist = ep.dist.name if ep.dist is not None else "?"
            where = f"covpipe plugin '{dist}' ({self.group} entry point '{ep.name} = {ep.value}')"
            if ep.name in self.builtins:
                raise PluginError(f"{where}: '{ep.name}' is a built-in {self.kind}; register it under another name")
            if ep.name in found:
                raise PluginError(f"{where}: '{ep.name}' is registered by plugin '{found[ep.name][1]}' too")
            try:
                cls = ep.load()
            except Exception as exc:  # whatever a foreign import raises, name the plugin
                raise PluginError(f"{where}: failed to load: {type(exc).__name__}: {exc}") from exc
            if get_args(key_annotation(getattr(cls, "Params", None), self.key)) != (ep.name,):
                raise PluginError(
                    f"{where}: {getattr(cls, '__name__', cls)}.Params needs the field "
                    f"{self.key}: Literal['{ep.name}'] (the name it is registered under)"
                )
            found[ep.name] = (cls, dist)
        return found

    def __getitem__(self, name: str) -> type:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def lookup(self, name: str) -> type:
        """The class registered under `name`; KeyError naming the known ones otherwise."""
        try:
            return self[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} '{name}'; known: {', '.join(sorted(self))}") from None


def key_field(params, key: str) -> str | None:
    """The name of the field of pydantic model `params` that config key `key` sets (its alias)."""
    fields = getattr(params, "model_fields", {})
    return next((n for n, f in fields.items() if (f.alias or n) == key), None)


def key_annotation(params, key: str):
    """The annotation of that field (an entry's name: Literal['markov']), or None."""
    name = key_field(params, key)
    return None if name is None else params.model_fields[name].annotation
