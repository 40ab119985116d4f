"""The one YAML reader of covpipe configs: `covpipe check` and the workflow both use it.

Bounded and literal. It refuses, in one line naming the file (and line, or key):
- a file over MAX_BYTES, or one that is not UTF-8 text;
- a document whose aliases would expand past MAX_NODES values, or nest deeper than MAX_DEPTH
  (a 1 KB "billion laughs" document is refused after reading it once, never expanded);
- a key given twice in one mapping, at any depth (YAML keeps the last one silently);
- integers with a leading zero (`010`: YAML 1.1 reads octal 8, YAML 1.2 decimal 10).
Scalars follow the YAML 1.2 core schema: only true/false are booleans (`yes`, `on` stay
strings, which the schema then refuses where a boolean is expected); `1e6` is a float.
No tags beyond the core schema, so nothing in a config file runs code.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

MAX_BYTES = 1 << 20  # a config is a few KB; 1 MiB leaves room and bounds reading
MAX_NODES = 100_000  # values after expanding aliases
MAX_DEPTH = 64


class YAMLRefused(ValueError):
    """The document is refused; the message is one line without the file name."""


class _Loader(yaml.SafeLoader):
    pass


# YAML 1.2 core schema resolvers instead of PyYAML's YAML 1.1 ones.
_Loader.yaml_implicit_resolvers = {}
_Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
_Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^<<$"), ["<"])
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver("tag:covpipe,2026:leading-zero", re.compile(r"^[-+]?0[0-9_]+$"), list("-+0"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)


def _bool(loader, node):
    return node.value.lower() == "true"


def _int(loader, node):
    text = node.value
    if text.startswith(("0o", "0x")):
        return int(text, 0)
    return int(text)


def _float(loader, node):
    text = node.value.lower()
    if text.lstrip("+-") == ".inf":
        return float("-inf") if text.startswith("-") else float("inf")
    if text == ".nan":
        return float("nan")
    return float(text)


def _leading_zero(loader, node):
    raise YAMLRefused(
        f"line {node.start_mark.line + 1}: {_short(node.value)}: an integer with a leading zero is "
        "ambiguous (YAML 1.1 reads 010 as octal 8); write it without the zero, or quote it"
    )


def _mapping(loader, node):
    seen = {}
    for key_node, _ in node.value:  # the mapping's own keys; `<<: *base` may be overridden by them
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise YAMLRefused(f"line {key_node.start_mark.line + 1}: a mapping key must be a plain value") from None
        if key in seen:
            raise YAMLRefused(
                f"line {key_node.start_mark.line + 1}: {_short(key)}: duplicate key (also on line "
                f"{seen[key] + 1}); YAML would keep only the last one"
            )
        seen[key] = key_node.start_mark.line
    loader.flatten_mapping(node)
    return {loader.construct_object(k, deep=True): loader.construct_object(v, deep=True) for k, v in node.value}


_Loader.add_constructor("tag:yaml.org,2002:bool", _bool)
_Loader.add_constructor("tag:yaml.org,2002:int", _int)
_Loader.add_constructor("tag:yaml.org,2002:float", _float)
_Loader.add_constructor("tag:covpipe,2026:leading-zero", _leading_zero)
_Loader.add_constructor("tag:yaml.org,2002:map", _mapping)


def _expanded_size(root) -> int:
    """Values the node graph holds once every alias is expanded; refuses cycles and deep nesting.
    Linear in the document: each node's size is computed once (aliases share nodes)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node, depth):
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise YAMLRefused(f"line {node.start_mark.line + 1}: an alias refers to a value that contains it")
        if depth > MAX_DEPTH:
            raise YAMLRefused(f"line {node.start_mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        active.discard(key)
        sizes[key] = total = min(total, MAX_NODES + 1)
        return total

    return size(root, 0)


def loads(data: bytes):
    """Parse one YAML document from bytes under the limits above; YAMLRefused or yaml.YAMLError."""
    if len(data) > MAX_BYTES:
        raise YAMLRefused(f"{len(data)} bytes; a config file is at most {MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YAMLRefused(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise YAMLRefused(f"nested deeper than {MAX_DEPTH} levels") from None
        if node is None:
            return None
        if _expanded_size(node) > MAX_NODES:
            raise YAMLRefused(
                f"expands to more than {MAX_NODES} values (aliases of aliases?); a config needs a few hundred"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load(path):
    """Read and parse a config file; YAMLRefused (a one-line reason) or yaml.YAMLError."""
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    return loads(data)


def _short(value, limit: int = 40) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
