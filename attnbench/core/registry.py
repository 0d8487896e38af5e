"""Registries of named, configurable classes: attention variants here, tasks in :mod:`attnbench.tasks`.

A registry maps a name to a class; :mod:`attnbench.core.spec` parses the spec strings that name a class and
its options, and :mod:`attnbench.core.plugins` loads third-party classes (entry points, lazily on the first
lookup). Their public names are importable from here too.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from attnbench.core.attention import Attention
from attnbench.core.plugins import (
    DISABLE_PLUGINS_ENV,
    PluginError,
    PluginFailure,
    _loaded_plugins,
    load_entry_points,
    load_plugin,
    loaded_plugins,
)
from attnbench.core.spec import (
    OptionInfo,
    Spec,
    SpecError,
    coerce,
    describe_options,
    format_value,
    options_of,
    parse_value,
    qualified_name,
    split_spec,
    type_name,
)

__all__ = [
    "ATTENTION", "DISABLE_PLUGINS_ENV", "OptionInfo", "PluginError", "PluginFailure", "Registry", "Spec",
    "SpecError", "_loaded_plugins", "attention_catalogue", "attention_class", "available_attention",
    "canonical_spec", "coerce", "create_attention", "describe_options", "format_value", "load_plugin",
    "loaded_plugins", "options_of", "parse_attention_spec", "parse_value", "register_attention", "split_spec",
    "type_name",
]  # fmt: skip

T = TypeVar("T")


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
                f"{self.kind} name {name!r} is already registered to {qualified_name(existing)}; "
                f"cannot register {qualified_name(cls)} under the same name (choose another name)"
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
        failures, versions = load_entry_points(self.entry_point_group, self.base, self.add, kind=self.kind)
        self.failures.extend(failures)
        self.plugin_versions.update(versions)

    def reload_entry_points(self) -> None:
        """Look for entry points again (after a package was installed in this process)."""
        self._entry_points_loaded = False
        self.failures.clear()
        importlib.invalidate_caches()
        self.load_entry_points()


def _same_class(a: type, b: type) -> bool:
    # a module re-executed (importlib.reload, a notebook cell run twice) yields an equal, non-identical class
    return a is b or qualified_name(a) == qualified_name(b)


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
                "noncausal": cls.supports_noncausal,
                "decode": cls.supports_decode,
                "class": qualified_name(cls),
                "options": [
                    {"name": o.name, "type": o.type_name, "default": None if o.required else format_value(o.default)}
                    for o in options_of(cls).values()
                ],
                "doc": (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " "),
            }
        )
    return records
