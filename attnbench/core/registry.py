"""Registries of named, configurable classes: attention variants (and, in ``bench``, tasks).

A spec string ``name[:opt=val[,opt=val...]]`` names a registered class and the keyword options of its
constructor. Options are validated against the constructor's signature and type hints; the canonical
spec (name plus non-default options, sorted) identifies a configuration in result files.

Third-party packages register through entry points, loaded lazily on the first lookup.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
import types
import typing
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from attnbench.core.attention import Attention
from attnbench.core.errors import UserError

T = TypeVar("T")

DISABLE_PLUGINS_ENV = "ATTNBENCH_DISABLE_PLUGINS"
_RESERVED = ("self", "head_dim", "num_heads")


class SpecError(UserError):
    """A spec string names something unknown or carries a bad option: a user mistake."""


class PluginError(UserError):
    """A ``--plugin`` module or file could not be loaded."""


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


@dataclass(frozen=True)
class PluginFailure:
    name: str
    source: str
    error: str


@dataclass
class Registry(Generic[T]):
    """Name → class, with typed options and lazily loaded entry-point plugins."""

    kind: str
    base: type
    entry_point_group: str
    _classes: dict[str, type[T]] = field(default_factory=dict)
    _entry_points_loaded: bool = False
    failures: list[PluginFailure] = field(default_factory=list)
    plugin_versions: dict[str, str] = field(default_factory=dict)

    # registration -------------------------------------------------------------------------------------
    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name):
            raise ValueError(
                f"{self.kind} name {name!r} is not valid: use letters, digits, '-', '_' or '.' "
                "(no ':', ',' or '=', which the spec grammar uses)"
            )

        def decorator(cls: type[T]) -> type[T]:
            self.add(name, cls)
            return cls

        return decorator

    def add(self, name: str, cls: type[T]) -> None:
        if not (inspect.isclass(cls) and issubclass(cls, self.base)):
            raise TypeError(f"cannot register {cls!r} as {self.kind} {name!r}: not a subclass of {self.base.__name__}")
        existing = self._classes.get(name)
        if existing is not None and not _same_class(existing, cls):
            raise ValueError(
                f"{self.kind} name {name!r} is already registered to {_qualname(existing)}; "
                f"cannot register {_qualname(cls)} under the same name (choose another name)"
            )
        options_of(cls)  # fail at registration, not at first use, if the signature is unusable
        self._classes[name] = cls

    # lookup -------------------------------------------------------------------------------------------
    def names(self, predicate: Callable[[type[T]], bool] | None = None) -> list[str]:
        self.load_entry_points()
        return sorted(n for n, c in self._classes.items() if predicate is None or predicate(c))

    def get(self, name: str) -> type[T]:
        self.load_entry_points()
        try:
            return self._classes[name]
        except KeyError:
            raise SpecError(self.unknown_message(name)) from None

    def __contains__(self, name: str) -> bool:
        self.load_entry_points()
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(known) or '(none)'}"

    def unregister(self, name: str) -> None:
        """Remove a registration (tests and scratch plugins)."""
        self._classes.pop(name, None)

    # specs --------------------------------------------------------------------------------------------
    def parse(self, spec: str) -> Spec:
        name, raw = split_spec(spec)
        cls = self.get(name)
        opts = options_of(cls)
        converted: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in opts:
                raise SpecError(f"{self.kind} {name!r} has no option {key!r}. Options: {describe_options(opts)}")
            try:
                converted[key] = coerce(value, opts[key].annotation)
            except (TypeError, ValueError) as err:
                raise SpecError(
                    f"{self.kind} {name!r}, option {key!r}: {err}. Options: {describe_options(opts)}"
                ) from None
        missing = [o.name for o in opts.values() if o.required and o.name not in converted]
        if missing:
            raise SpecError(
                f"{self.kind} {name!r} needs option(s) {', '.join(missing)}. Options: {describe_options(opts)}"
            )
        full = {o.name: converted.get(o.name, o.default) for o in opts.values()}
        non_default = {k: v for k, v in converted.items() if opts[k].required or v != opts[k].default}
        canonical = name + (
            ":" + ",".join(f"{k}={format_value(non_default[k])}" for k in sorted(non_default)) if non_default else ""
        )
        return Spec(name=name, options=full, canonical=canonical)

    def canonical(self, spec: str) -> str:
        return self.parse(spec).canonical

    # plugins ------------------------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        if os.environ.get(DISABLE_PLUGINS_ENV, "").strip().lower() in ("1", "true", "yes"):
            return
        for ep in importlib.metadata.entry_points(group=self.entry_point_group):
            try:
                cls = ep.load()
                if not (inspect.isclass(cls) and issubclass(cls, self.base)):
                    raise TypeError(f"{ep.value} is {cls!r}, not a subclass of {self.base.__name__}")
                self.add(ep.name, cls)
            except Exception as err:  # a broken plugin must not break the registry
                failure = PluginFailure(ep.name, ep.value, f"{type(err).__name__}: {err}")
                self.failures.append(failure)
                warnings.warn(
                    f"attnbench: {self.kind} plugin {ep.name!r} ({ep.value}) failed to load and is skipped: "
                    f"{failure.error}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            dist = getattr(ep, "dist", None)
            if dist is not None:
                self.plugin_versions[ep.name] = f"{dist.name} {dist.version}"

    def reload_entry_points(self) -> None:
        """Look for entry points again (after a package was installed in this process)."""
        self._entry_points_loaded = False
        self.failures.clear()
        importlib.invalidate_caches()
        self.load_entry_points()


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _same_class(a: type, b: type) -> bool:
    # a module re-executed (importlib.reload, a notebook cell run twice) yields an equal, non-identical class
    return a is b or _qualname(a) == _qualname(b)


# option introspection --------------------------------------------------------------------------------------
def options_of(cls: type) -> dict[str, OptionInfo]:
    """The keyword options of ``cls.__init__`` (beyond head_dim/num_heads), with types and defaults."""
    init = cls.__init__
    sig = inspect.signature(init)
    try:
        hints = typing.get_type_hints(init)
    except Exception as err:
        raise TypeError(f"{_qualname(cls)}.__init__ has type hints that cannot be resolved: {err}") from err
    out: dict[str, OptionInfo] = {}
    for p in sig.parameters.values():
        if p.name in _RESERVED or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.kind is not p.KEYWORD_ONLY:
            raise TypeError(f"{_qualname(cls)}.__init__: option {p.name!r} must be keyword-only (after `*`)")
        if p.name not in hints:
            raise TypeError(f"{_qualname(cls)}.__init__: option {p.name!r} needs a type hint")
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


# plugin files and modules ----------------------------------------------------------------------------------
_loaded_plugins: dict[str, str] = {}  # module name, or a file's absolute path → module name actually imported


def load_plugin(target: str) -> str:
    """Import a module name or a ``.py`` file so its ``@register_attention`` classes register.

    Idempotent: loading the same target twice imports it once. Returns the module name.
    """
    path = Path(target)
    looks_like_file = target.endswith(".py") or os.sep in target or path.exists()
    # a file is recorded by its absolute path, so a run resumed from another directory still finds it
    key = str(path.resolve()) if looks_like_file else target
    if key in _loaded_plugins:
        return _loaded_plugins[key]
    if looks_like_file:
        if not path.is_file():
            raise PluginError(f"plugin file {target!r} does not exist (pass a .py file or an importable module)")
        resolved = key
        digest = hashlib.sha1(resolved.encode()).hexdigest()[:10]
        module_name = f"attnbench_plugin_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{digest}"
        if module_name not in sys.modules:
            spec = importlib.util.spec_from_file_location(module_name, resolved)
            if spec is None or spec.loader is None:
                raise PluginError(f"plugin file {target!r} cannot be imported as Python")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as err:
                del sys.modules[module_name]
                raise PluginError(f"plugin file {target!r} failed to import: {type(err).__name__}: {err}") from err
    else:
        module_name = target
        try:
            importlib.import_module(target)
        except ModuleNotFoundError as err:
            raise PluginError(
                f"plugin module {target!r} cannot be found ({err}); pass an importable module or a .py file"
            ) from err
        except Exception as err:
            raise PluginError(f"plugin module {target!r} failed to import: {type(err).__name__}: {err}") from err
    _loaded_plugins[key] = module_name
    return module_name


def loaded_plugins() -> list[str]:
    """The ``--plugin`` targets loaded here (files as absolute paths), in load order (passed on to workers)."""
    return list(_loaded_plugins)


# the attention registry ------------------------------------------------------------------------------------
ATTENTION: Registry[Attention] = Registry(kind="attention", base=Attention, entry_point_group="attnbench.attention")


def register_attention(name: str) -> Callable[[type[Attention]], type[Attention]]:
    """Class decorator: make an :class:`Attention` subclass available as ``name`` in specs."""
    return ATTENTION.register(name)


def available_attention(family: str | None = None) -> list[str]:
    """Registered attention names, sorted; optionally only one family."""
    return ATTENTION.names(None if family is None else (lambda c: c.family == family))


def attention_class(name: str) -> type[Attention]:
    return ATTENTION.get(name)


def parse_attention_spec(spec: str) -> Spec:
    return ATTENTION.parse(spec)


def canonical_spec(spec: str) -> str:
    """Name plus non-default options, sorted: the identity of a variant in result files."""
    return parse_attention_spec(spec).canonical


def create_attention(spec: str | Attention, *, head_dim: int, num_heads: int) -> Attention:
    """Build a variant from a spec string (an :class:`Attention` instance is returned as is)."""
    if isinstance(spec, Attention):
        if (spec.head_dim, spec.num_heads) != (head_dim, num_heads):
            raise ValueError(
                f"attention instance has head_dim={spec.head_dim}, num_heads={spec.num_heads}; "
                f"this slot needs head_dim={head_dim}, num_heads={num_heads}"
            )
        return spec
    parsed = parse_attention_spec(spec)
    cls = ATTENTION.get(parsed.name)
    try:
        module = cls(head_dim=head_dim, num_heads=num_heads, **parsed.options)
    except (ValueError, TypeError) as err:
        raise SpecError(f"attention {parsed.canonical!r}: {err}") from err
    module.spec = parsed.canonical
    return module


def attention_catalogue(family: str | None = None) -> list[dict[str, Any]]:
    """One plain record per registered variant (what `attnbench list` shows and `--json` prints)."""
    records = []
    for name in available_attention(family):
        cls = ATTENTION.get(name)
        records.append(
            {
                "name": name,
                "family": cls.family,
                "exact": cls.exact,
                "causal": cls.supports_causal,
                "cross": cls.supports_cross,
                "class": _qualname(cls),
                "options": [
                    {"name": o.name, "type": o.type_name, "default": None if o.required else format_value(o.default)}
                    for o in options_of(cls).values()
                ],
                "doc": (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " "),
            }
        )
    return records
