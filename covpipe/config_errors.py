"""Config refusals as one line: `ConfigError`, pydantic's errors rewritten to name the key the user
wrote (never a union's internal tag), and the checks of the raw tree that no schema states."""

from __future__ import annotations

import difflib
import math
import re
import reprlib
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from . import strict_yaml
from .registry import key_annotation

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # always fullmatch: `$` would let "name\n" through
MAX_NAME = 64


class ConfigError(ValueError):
    """A user error in the config; its message is one line meant for the user."""


@dataclass(frozen=True, eq=False)  # hashed by identity: typing hashes Annotated metadata
class Registered:
    """Marks a discriminated union of a registry's entries (in `Annotated`), so that an error
    names the registry's key and its choices, and drops pydantic's tag from the location."""

    registry: Any  # covpipe.registry.Registry


def first_error(exc: ValidationError, root) -> str:
    """'key.path: message' for the first error of validating against `root` (a model or type)."""
    err = exc.errors()[0]
    parts, parent, at, reg = _walk(root, err["loc"])
    loc = ""
    for part in parts:
        loc += f"[{part}]" if isinstance(part, int) else (f".{short(part)}" if loc else short(part))
    msg = err["msg"].removeprefix("Value error, ")
    kind = err["type"]
    if reg is not None and kind in ("union_tag_invalid", "union_tag_not_found"):
        known = f"known: {', '.join(sorted(reg.registry))}"
        key = reg.registry.key
        loc = f"{loc}.{key}" if loc else key
        if kind == "union_tag_not_found":
            return f"{loc}: missing; {known}"
        return f"{loc}: unknown {reg.registry.kind} '{short(err['input'][key])}'; {known}"
    if kind in ("model_attributes_type", "model_type", "dict_type") and (reg is not None or _is_model(at)):
        msg = f"expected a mapping, got {type(err['input']).__name__}"
    elif kind == "extra_forbidden":
        fields = [f.alias or n for n, f in parent.model_fields.items()] if _is_model(parent) else []
        close = difflib.get_close_matches(str(parts[-1]), fields, n=1)
        msg = "unknown key" + (f"; did you mean '{close[0]}'?" if close else "")
    elif kind == "missing":
        msg = "missing"
    elif "input" in err and kind not in ("value_error",):
        msg = f"{msg}, got {short(err['input'])!s}"
    if msg.startswith("[") and "]:" in msg:  # a list index reported by a validator
        idx, _, rest = msg.partition(":")
        return f"{loc}{idx}:{rest}"
    return f"{loc}: {msg}"


def _walk(root, loc) -> tuple[list, Any, Any, Registered | None]:
    """Follow pydantic's error location through the types from `root`: (the location without the
    tags discriminated unions insert, the type holding its last part, the type at its end, and the
    `Registered` marker there if it is a registry union)."""
    tp, parent, parts = root, None, []
    for part in loc:
        tp, reg = _unwrap(tp)
        if reg is not None:  # this part is the tag: step into the member it names
            tp = next((m for m in get_args(tp) if get_args(key_annotation(m, reg.registry.key)) == (part,)), None)
            continue
        parts.append(part)
        parent = tp
        if _is_model(tp):
            field = next((f for n, f in tp.model_fields.items() if part in (n, f.alias)), None)
            tp = (
                None
                if field is None
                else Annotated[(field.annotation, *field.metadata)]
                if field.metadata
                else field.annotation
            )
        elif get_origin(tp) in (dict, list):
            tp = get_args(tp)[-1]
        else:
            tp = None
    tp, reg = _unwrap(tp)
    return parts, parent, tp, reg


def _unwrap(tp) -> tuple[Any, Registered | None]:
    """`tp` without Optional and Annotated, and the Registered marker its Annotated carries."""
    reg = None
    while True:
        if get_origin(tp) is Annotated:
            reg = next((m for m in tp.__metadata__ if isinstance(m, Registered)), reg)
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, UnionType) and type(None) in get_args(tp) and len(get_args(tp)) == 2:
            tp = next(a for a in get_args(tp) if a is not type(None))
        else:
            return tp, reg


def _is_model(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def suggest(key, choices) -> str:
    close = difflib.get_close_matches(str(key), list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(choices)}"


def check_name(source, prefix, name, kind="names", reserved=frozenset()) -> None:
    """Names become path parts and table labels: refuse what would not make a safe one."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or len(name) > MAX_NAME:
        shown = short(name) if isinstance(name, str) and name.isprintable() else short(repr(name))
        raise ConfigError(
            f"{source}: {prefix}.{shown}: {kind} must match {NAME.pattern} and have at most "
            f"{MAX_NAME} characters (they become path parts and table labels)"
        )
    if name in reserved:
        raise ConfigError(f"{source}: {prefix}.{name}: '{name}' is a label covpipe writes itself; choose another name")


def check_plain(source, raw) -> None:
    """Refuse what no setting takes, anywhere in the tree: NaN or infinite numbers (in every
    teacher, model and learner section, not only the top-level schema) and non-string keys.
    The tree is small: strict_yaml bounds its expanded size before we get here."""
    stack = [("", raw, 0)]
    while stack:
        where, value, depth = stack.pop()
        if depth > strict_yaml.MAX_DEPTH:
            raise ConfigError(f"{source}: {where}: nested deeper than {strict_yaml.MAX_DEPTH} levels")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{source}: {where}: Input should be a finite number, got {value}")
        if isinstance(value, dict):
            for key, child in value.items():
                if not isinstance(key, str):
                    raise ConfigError(
                        f"{source}: {where + '.' if where else ''}{short(key)}: keys must be "
                        f"strings, got {type(key).__name__}"
                    )
                stack.append((f"{where}.{key}" if where else key, child, depth + 1))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", child, depth + 1) for i, child in enumerate(value))


_REPR = reprlib.Repr()  # Python 3.11: attributes, not constructor arguments
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, 4, 6, 60, 60, 40


def short(value, limit: int = 60) -> str:
    """A bounded rendering of any value: never a repr of a whole (possibly huge) input."""
    text = value[: limit + 1] if isinstance(value, str) else _REPR.repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(exc) -> str:
    return " ".join(str(exc).split())
