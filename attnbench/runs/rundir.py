"""Run directories: a manifest written atomically and append-only CSV files that survive interruption.

A run lives in ``results/<YYYYmmdd-HHMMSS>-<command>[-<suite>]/`` and is never overwritten. Rows are
appended and flushed as each cell finishes; a half-written last line (a killed process) is dropped when
the file is read or reopened, so that cell simply runs again on ``--resume``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.core.errors import UserError
from attnbench.runs.lock import LOCK_FILE, RunLock
from attnbench.runs.schema import DEFAULT_ROOT, MANIFEST
from attnbench.runs.validation import validated_text


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _unique_temp(path: Path) -> Path:
    """A new, uniquely named file beside ``path``: two writers never share a temporary file."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a uniquely named temporary file in the same directory, fsync, then rename over the target."""
    tmp = _unique_temp(path)
    try:
        with tmp.open("w") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _complete_text(path: Path, errors: str = "strict") -> str:
    """The file's text up to its last newline: a torn final row (the writer was killed) is not data."""
    text = path.read_text(errors=errors)
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return text


def read_rows(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read an append-only CSV, tolerating a truncated last line; a missing file is an empty frame.

    Rows the schema rejects (wrong field count, types, ranges, unknown status, duplicate cell) are left out,
    with one warning line per file (see :mod:`attnbench.runs.validation`).
    """
    if not path.exists():
        return pd.DataFrame(columns=list(columns or []))
    text = validated_text(path, _complete_text(path, errors="replace"))
    if not text.strip():
        return pd.DataFrame(columns=list(columns or []))
    frame = pd.read_csv(io.StringIO(text), keep_default_na=True)
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise UserError(f"{path}: missing columns {', '.join(missing)}; is it an attnbench result file?")
    return frame


class CsvAppender:
    """Appends rows to a CSV with a fixed header; every row is flushed and fsynced before the next cell."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = path
        self.columns = tuple(columns)
        if path.exists() and path.stat().st_size:
            text = _complete_text(path)
            if len(text) != path.stat().st_size:
                with path.open("r+") as f:  # drop the torn last row so appends start on a clean line
                    f.truncate(len(text.encode()))
            header = text.splitlines()[0].split(",") if text else []
            if header and tuple(header) != self.columns:
                raise UserError(
                    f"{path} has columns {','.join(header)}, expected {','.join(self.columns)}: "
                    "it was written by another schema version; start a new run directory"
                )
            self._needs_header = not text
        else:
            self._needs_header = True

    def append(self, row: dict[str, Any]) -> None:
        unknown = set(row) - set(self.columns)
        if unknown:
            raise ValueError(f"row has columns not in {self.path.name}: {sorted(unknown)}")
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, lineterminator="\n")
            if self._needs_header:
                writer.writeheader()
                self._needs_header = False
            writer.writerow({c: _cell(row.get(c)) for c in self.columns})
            f.flush()
            os.fsync(f.fileno())

    def extend(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.append(row)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return value


def _cannot_create(path: Path, err: OSError) -> UserError:
    return UserError(f"cannot create run directory {path}: {err.strerror or err}; pass --out a writable directory path")


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a parent is a file, a read-only or virtual file system (/proc), no permission
        raise _cannot_create(path, err) from None


def _has_entries(path: Path) -> bool:
    try:
        return any(p.name != LOCK_FILE for p in path.iterdir())
    except OSError as err:
        raise UserError(f"--out {path} cannot be read ({err.strerror or err}); pass a new directory") from None


@dataclass
class RunDir:
    path: Path
    # set by a sweep that stopped before its last cell (the hidden --max-cells): the session is not complete
    stopped_early: bool = field(default=False, compare=False)
    lock: RunLock = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.lock = RunLock(self.path)

    @classmethod
    def create(
        cls, command: str, *, suite: str | None = None, out: Path | None = None, root: Path = DEFAULT_ROOT
    ) -> RunDir:
        """A new, empty run directory, locked for this process; an existing one is never reused (--resume it).

        No check-then-create: the directory is made (or found empty) and locked, and only then checked
        empty, so of two processes given the same ``--out`` exactly one gets it.
        """
        if out is not None:
            if out.exists() and not out.is_dir():
                raise UserError(f"--out {out} is a file, not a directory: pass a path for a new run directory")
            if out.is_dir() and not os.access(out, os.W_OK):
                raise UserError(f"cannot write to run directory {out}: permission denied; pass --out a writable path")
            _make_dir(out)
            run = cls(out)
            run.lock.acquire()
            if (out / MANIFEST).exists() or _has_entries(out):
                run.lock.release()
                raise UserError(
                    f"--out {out} already exists and is not empty; results are never overwritten "
                    f"(choose a new directory, or continue that run with --resume {out})"
                )
            return run
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{stamp}-{command}" + (f"-{suite}" if suite else "")
        _make_dir(root)
        path, n = root / name, 2
        while True:
            try:
                path.mkdir()
                run = cls(path)
                run.lock.acquire()
                return run
            except FileExistsError:
                path, n = root / f"{name}-{n}", n + 1
            except OSError as err:
                raise _cannot_create(path, err) from None

    @classmethod
    def existing(cls, path: Path) -> RunDir:
        if not path.is_dir():
            raise UserError(f"run directory {path} does not exist")
        if not (path / MANIFEST).is_file():
            raise UserError(f"{path} has no {MANIFEST}: it is not an attnbench run directory")
        return cls(path)

    # manifest -----------------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def lock_for_writing(self) -> RunDir:
        """Take the directory's writer lock (refused, naming the holder, while another process writes to it)."""
        self.lock.acquire()
        return self

    def read_manifest(self) -> dict[str, Any]:
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{self.manifest_path} is not valid JSON ({err}); the run cannot be resumed") from None
        if not isinstance(manifest, dict):
            raise UserError(
                f"{self.manifest_path} holds a JSON {type(manifest).__name__}, not an object: "
                "it is not an attnbench manifest"
            )
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json_atomic(self.manifest_path, manifest)

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        manifest = self.read_manifest()
        manifest.update(fields)
        self.write_manifest(manifest)
        return manifest

    def begin_session(self, argv: Sequence[str]) -> int:
        manifest = self.read_manifest()
        sessions = manifest.setdefault("sessions", [])
        sessions.append({"start": now_iso(), "end": None, "status": "running", "argv": list(argv)})
        self.write_manifest(manifest)
        return len(sessions) - 1

    def end_session(self, index: int, status: str) -> None:
        manifest = self.read_manifest()
        session = manifest["sessions"][index]
        session["end"] = now_iso()
        session["status"] = status
        self.write_manifest(manifest)

    # rows ---------------------------------------------------------------------------------------------
    def appender(self, name: str, columns: Sequence[str]) -> CsvAppender:
        return CsvAppender(self.path / name, columns)

    def rows(self, name: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        return read_rows(self.path / name, columns)

    def drop_orphan_rows(self, side: str, *, main: str, key: Sequence[str]) -> int:
        """Remove rows of ``side`` whose ``key`` has no row in ``main``; returns how many were dropped.

        A cell writes its side rows (raw times, curves) before its main row, so a cell killed in between
        leaves side rows without a main row; on resume that cell runs again and would write them twice.
        Those rows belong to an unfinished cell, so dropping them is not overwriting a result: every side
        row of a finished cell is kept. The file is replaced atomically (temporary file, fsync, rename).
        """
        side_path = self.path / side
        if not side_path.exists():
            return 0
        main_path = self.path / main
        main_text = _complete_text(main_path) if main_path.exists() else ""
        done = {tuple(r[k] for k in key) for r in csv.DictReader(io.StringIO(main_text))}
        reader = csv.DictReader(io.StringIO(_complete_text(side_path)))
        if not set(key) <= set(reader.fieldnames or []):
            return 0  # not this schema: the appender refuses the file with a clear message
        rows = list(reader)
        kept = [r for r in rows if tuple(r[k] for k in key) in done]
        if len(kept) == len(rows):
            return 0  # a torn last line, if any, is dropped by the next appender
        tmp = _unique_temp(side_path)
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=reader.fieldnames or [], lineterminator="\n")
            writer.writeheader()
            writer.writerows(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, side_path)
        return len(rows) - len(kept)


def conflicting_options(stored: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """The options a user passed on --resume that differ from what the run was started with."""
    conflicts = []
    for name, value in given.items():
        if value is None or stored.get(name) is None:
            continue
        if not _same_option(value, stored[name]):
            conflicts.append(f"{name}={value!r} (the run has {stored[name]!r})")
    return conflicts


def _same_option(given: Any, stored: Any) -> bool:
    # list options are sets of choices (variants, lengths, passes, plugins): order and repeats do not matter
    if isinstance(given, (list, tuple)) and isinstance(stored, (list, tuple)):
        return {json.dumps(v, sort_keys=True) for v in given} == {json.dumps(v, sort_keys=True) for v in stored}
    return bool(given == stored)
