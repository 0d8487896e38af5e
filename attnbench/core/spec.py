"""Spec strings: ``name[:opt=val[,opt=val...]]`` parsed, typed against a constructor, and written back.

Options are validated against the constructor's signature and type hints; the canonical spec (name plus
non-default options, sorted) identifies a configuration in result files.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from attnbench.core.errors import UserError

_RESERVED = ("self", "head_dim", "num_heads")


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class SpecError(UserError):
    """A spec string names something unknown or carries a bad option: a user mistake."""


_MISSING = object()


@dataclass(frozen=True)
class OptionInfo:
    name: str
    annotation: Any
    default: Any = _MISSING

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    @property
    def type_name(self) -> str:
        return type_name(self.annotation)

    def describe(self) -> str:
        default = "required" if self.required else f"default {format_value(self.default)}"
        return f"{self.name}: {self.type_name} ({default})"


@dataclass(frozen=True)
class Spec:
    """A parsed, validated spec: registry name plus converted options (defaults filled in)."""

    name: str
    options: dict[str, Any]
    canonical: str


# option introspection --------------------------------------------------------------------------------------
def options_of(cls: type) -> dict[str, OptionInfo]:
    """The keyword options of ``cls.__init__`` (beyond head_dim/num_heads), with types and defaults."""
    init = cls.__init__
    sig = inspect.signature(init)
    try:
        hints = typing.get_type_hints(init)
    except Exception as err:
        raise TypeError(f"{qualified_name(cls)}.__init__ has type hints that cannot be resolved: {err}") from err
    out: dict[str, OptionInfo] = {}
    for p in sig.parameters.values():
        if p.name in _RESERVED or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.kind is not p.KEYWORD_ONLY:
            raise TypeError(f"{qualified_name(cls)}.__init__: option {p.name!r} must be keyword-only (after `*`)")
        if p.name not in hints:
            raise TypeError(f"{qualified_name(cls)}.__init__: option {p.name!r} needs a type hint")
        default = _MISSING if p.default is p.empty else p.default
        out[p.name] = OptionInfo(p.name, hints[p.name], default)
    return out


def describe_options(opts: dict[str, OptionInfo]) -> str:
    return "; ".join(o.describe() for o in opts.values()) or "(none)"


def type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(format_value(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin in (list, tuple):
        inner = args[0] if args else Any
        return f"list[{type_name(inner)}]"
    if annotation is type(None):
        return "none"
    return getattr(annotation, "__name__", str(annotation))


# the spec grammar ------------------------------------------------------------------------------------------
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)")


def split_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name:a=1,b=[1,2]"`` → ``("name", {"a": 1, "b": [1, 2]})`` with raw parsed values."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"empty spec {spec!r}: expected name[:option=value,...]")
    name, sep, rest = spec.strip().partition(":")
    name = name.strip()
    if not name:
        raise SpecError(f"spec {spec!r} has no name before ':'")
    options: dict[str, Any] = {}
    if sep and not rest.strip():
        raise SpecError(f"spec {spec!r} ends with ':' but gives no options; drop the ':' or add opt=value")
    for item in _split_top_level(rest, spec) if rest.strip() else []:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise SpecError(f"spec {spec!r}: {item.strip()!r} is not of the form option=value")
        if key in options:
            raise SpecError(f"spec {spec!r} sets option {key!r} twice")
        options[key] = parse_value(value.strip(), spec)
    return name, options


def _split_top_level(text: str, spec: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise SpecError(f"spec {spec!r} has an unmatched ']'")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise SpecError(f"spec {spec!r} has an unclosed '['")
    parts.append(text[start:])
    return parts


def parse_value(text: str, spec: str = "") -> Any:
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [parse_value(p.strip(), spec) for p in _split_top_level(inner, spec)] if inner else []
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(low):
        return float(text)
    if not text or any(c in text for c in "[]=,:"):
        raise SpecError(f"spec {spec!r}: {text!r} is not a valid value")
    return text


def coerce(value: Any, annotation: Any) -> Any:
    """Convert a parsed value to ``annotation`` or raise ValueError saying what was expected."""
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg)
            except (TypeError, ValueError):
                continue
        raise ValueError(f"expected {type_name(annotation)}, got {format_value(value)}")
    if origin is Literal:
        if value in args and isinstance(value, bool) == any(isinstance(a, bool) for a in args):
            return value
        raise ValueError(f"expected one of {', '.join(format_value(a) for a in args)}, got {format_value(value)}")
    if origin in (list, tuple):
        if not isinstance(value, list):
            value = [value]
        inner = args[0] if args else Any
        items = [coerce(v, inner) for v in value]
        return items if origin is list else tuple(items)
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif annotation is type(None):
        if value is None:
            return None
    else:
        raise TypeError(f"options of type {type_name(annotation)} cannot be set from a spec string")
    raise ValueError(f"expected {type_name(annotation)}, got {format_value(value)}")


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)
