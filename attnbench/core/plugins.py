"""Plugins: ``--plugin`` modules and ``.py`` files, and the entry points third-party packages register through."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from attnbench.core.errors import UserError

DISABLE_PLUGINS_ENV = "ATTNBENCH_DISABLE_PLUGINS"


class PluginError(UserError):
    """A ``--plugin`` module or file could not be loaded."""


def _import_failure(err: BaseException) -> str:
    """What went wrong at import, in words: a plugin calling ``sys.exit`` is named with its status."""
    if isinstance(err, SystemExit):
        return f"called sys.exit({err.code!r}) at import"
    return f"failed to import: {type(err).__name__}: {err}"


@dataclass(frozen=True)
class PluginFailure:
    name: str
    source: str
    error: str


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
            except (Exception, SystemExit) as err:  # an exit at import must not end attnbench silently
                del sys.modules[module_name]
                raise PluginError(f"plugin file {target!r} {_import_failure(err)}") from err
    else:
        module_name = target
        try:
            importlib.import_module(target)
        except ModuleNotFoundError as err:
            raise PluginError(
                f"plugin module {target!r} cannot be found ({err}); pass an importable module or a .py file"
            ) from err
        except (Exception, SystemExit) as err:  # an exit at import must not end attnbench silently
            raise PluginError(f"plugin module {target!r} {_import_failure(err)}") from err
    _loaded_plugins[key] = module_name
    return module_name


def loaded_plugins() -> list[str]:
    """The ``--plugin`` targets loaded here (files as absolute paths), in load order (passed on to workers)."""
    return list(_loaded_plugins)


def load_entry_points(
    group: str, base: type, add: Callable[[str, type], None], *, kind: str
) -> tuple[list[PluginFailure], dict[str, str]]:
    """Register every class the installed packages declare in ``group``; a broken one is reported, not raised.

    Returns the failures and each loaded plugin's distribution ("name version").
    """
    failures: list[PluginFailure] = []
    versions: dict[str, str] = {}
    if os.environ.get(DISABLE_PLUGINS_ENV, "").strip().lower() in ("1", "true", "yes"):
        return failures, versions
    for ep in importlib.metadata.entry_points(group=group):
        try:
            cls = ep.load()
            if not (inspect.isclass(cls) and issubclass(cls, base)):
                raise TypeError(f"{ep.value} is {cls!r}, not a subclass of {base.__name__}")
            add(ep.name, cls)
        except (Exception, SystemExit) as err:  # a broken plugin (one that exits, too) must not break the registry
            failure = PluginFailure(ep.name, ep.value, _import_failure(err))
            failures.append(failure)
            warnings.warn(
                f"attnbench: {kind} plugin {ep.name!r} ({ep.value}) failed to load and is skipped: {failure.error}",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        dist = getattr(ep, "dist", None)
        if dist is not None:
            versions[ep.name] = f"{dist.name} {dist.version}"
    return failures, versions
