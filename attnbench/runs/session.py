"""The life of a run directory: its manifest at creation, a session entry per invocation, resume checks."""

from __future__ import annotations

import sys
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


def load_run_plugins(path: Path) -> None:
    """Import the plugins a run was started with, so its plugin variants resolve (e.g. in --variant)."""
    for plugin in RunDir.existing(path).read_manifest().get("plugins", {}).get("files_and_modules", []):
        load_plugin(plugin)


def open_for_resume(path: Path, section: str, given: dict[str, Any]) -> tuple[RunDir, dict[str, Any]]:
    """The run directory and its stored ``section`` config; refuses options that conflict with it."""
    run_dir = RunDir.existing(path)
    manifest = run_dir.read_manifest()
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise UserError(
            f"{run_dir.manifest_path} has schema_version {manifest.get('schema_version')!r}; "
            f"this attnbench writes {SCHEMA_VERSION} and cannot resume it"
        )
    if section not in manifest:
        raise UserError(f"{path} has no {section!r} configuration: it was not started by this command")
    stored = manifest[section]
    conflicts = conflicting_options(stored, given)
    if conflicts:
        raise UserError(
            f"--resume {path}: options conflict with the run's configuration: {'; '.join(conflicts)}. "
            "Drop them to finish the run as configured, or start a new run"
        )
    for plugin in manifest.get("plugins", {}).get("files_and_modules", []):
        load_plugin(plugin)
    return run_dir, manifest


@contextmanager
def session(run_dir: RunDir, executor: Executor | None = None) -> Iterator[None]:
    """Record this invocation in the manifest; on Ctrl-C (or a sweep stopped early) mark it interrupted."""
    index = run_dir.begin_session(["attnbench", *sys.argv[1:]])
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
    # a sweep cut short on purpose (--max-cells) leaves cells to do, like Ctrl-C: --resume finishes it
    run_dir.end_session(index, "interrupted" if run_dir.stopped_early else "complete")
