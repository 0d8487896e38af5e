"""The life of a run directory: its manifest at creation, a session entry per invocation, resume checks."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from attnbench.core.errors import UserError
from attnbench.core.registry import ATTENTION, load_plugin, loaded_plugins
from attnbench.execution.protocol import Executor
from attnbench.runs.environment import environment
from attnbench.runs.rundir import RunDir, conflicting_options, now_iso
from attnbench.runs.schema import DEFAULT_ROOT, SCHEMA_VERSION


class Interrupted(Exception):  # noqa: N818 (a signal, not an error: the run stopped on request)
    """The user stopped the run (Ctrl-C); what finished is on disk."""


def plugin_info() -> dict[str, Any]:
    return {"files_and_modules": loaded_plugins(), "entry_points": dict(ATTENTION.plugin_versions)}


def new_run(
    command: str,
    *,
    sections: dict[str, Any],
    device: str,
    threads: int,
    suite: str | None = None,
    out: Path | None = None,
    root: Path = DEFAULT_ROOT,
) -> RunDir:
    run_dir = RunDir.create(command, suite=suite, out=out, root=root)
    run_dir.write_manifest(
        {
            "schema_version": SCHEMA_VERSION,
            "command": command,
            "suite": suite,
            "created": now_iso(),
            "argv": ["attnbench", *sys.argv[1:]],
            "environment": environment(device, threads),
            "plugins": plugin_info(),
            "sessions": [],
            **sections,
        }
    )
    return run_dir


def recorded_plugins(manifest: dict[str, Any]) -> list[str]:
    plugins = manifest.get("plugins")
    recorded = plugins.get("files_and_modules") if isinstance(plugins, dict) else None
    return [str(p) for p in recorded] if isinstance(recorded, list) else []


def load_run_plugins(path: Path, *, trust: bool = False) -> None:
    """Import the plugins a run was started with, so its plugin variants resolve (e.g. in --variant).

    A run directory may come from anyone: its plugin files are imported only when this invocation names
    them again with ``--plugin`` (already loaded) or passes ``--trust-plugins`` (which says what it imports).
    """
    recorded = recorded_plugins(RunDir.existing(path).read_manifest())
    missing = [p for p in recorded if p not in loaded_plugins()]
    if not missing:
        return
    if not trust:
        again = " ".join(f"--plugin {p}" for p in missing)
        raise UserError(
            f"--resume {path}: the run uses plugin code ({', '.join(missing)}) that is not imported unasked; "
            f"pass it again (attnbench {again} ...) or add --trust-plugins to import what the manifest names"
        )
    for plugin in missing:
        print(f"--trust-plugins: importing {plugin} (named in {path}/manifest.json)", file=sys.stderr)
        load_plugin(plugin)


def open_for_resume(
    path: Path, section: str, given: dict[str, Any], *, trust_plugins: bool = False
) -> tuple[RunDir, dict[str, Any]]:
    """The run directory, locked for this process, and its stored ``section`` config; refuses options that
    conflict with it, and plugin code the user did not name again (see :func:`load_run_plugins`)."""
    run_dir = RunDir.existing(path).lock_for_writing()
    try:
        manifest = _checked_for_resume(run_dir, path, section, given, trust_plugins=trust_plugins)
    except BaseException:
        run_dir.lock.release()  # refused: the directory stays free for the next try
        raise
    return run_dir, manifest


def _checked_for_resume(
    run_dir: RunDir, path: Path, section: str, given: dict[str, Any], *, trust_plugins: bool
) -> dict[str, Any]:
    manifest = run_dir.read_manifest()
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise UserError(
            f"{run_dir.manifest_path} has schema_version {manifest.get('schema_version')!r}; "
            f"this attnbench writes {SCHEMA_VERSION} and cannot resume it"
        )
    if not isinstance(manifest.get(section), dict):
        raise UserError(f"{path} has no {section!r} configuration: it was not started by this command")
    stored = manifest[section]
    conflicts = conflicting_options(stored, given)
    if conflicts:
        raise UserError(
            f"--resume {path}: options conflict with the run's configuration: {'; '.join(conflicts)}. "
            "Drop them to finish the run as configured, or start a new run"
        )
    load_run_plugins(path, trust=trust_plugins)
    return manifest


def _interrupt_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's stop, ``kill``) ends the session like Ctrl-C: workers stopped, session interrupted."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def session(run_dir: RunDir, executor: Executor | None = None) -> Iterator[None]:
    """Record this invocation in the manifest; on Ctrl-C (or a sweep stopped early) mark it interrupted."""
    with _sigterm_as_interrupt():  # installed first: a SIGTERM once the session is recorded marks it interrupted
        index = run_dir.begin_session(["attnbench", *sys.argv[1:]])
        with _stopped_as_interrupted(run_dir, index, executor):
            yield


@contextmanager
def _stopped_as_interrupted(run_dir: RunDir, index: int, executor: Executor | None) -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        if executor is not None:
            executor.cancel()
        run_dir.end_session(index, "interrupted")
        raise Interrupted(
            f"interrupted: finished cells are saved in {run_dir.path}; continue with --resume {run_dir.path}"
        ) from None
    except BaseException:
        run_dir.end_session(index, "failed")
        raise
    else:
        # a sweep cut short on purpose (--max-cells) leaves cells to do, like Ctrl-C: --resume finishes it
        run_dir.end_session(index, "interrupted" if run_dir.stopped_early else "complete")
    finally:
        run_dir.lock.release()  # written: the next writer (a --resume in this same process, too) may have it
