"""One writer per run directory: an exclusive ``flock`` on a lock file inside it, held while the process lives.

The kernel drops the lock when its holder exits, however it exits (``kill -9`` included), so a stale lock
cannot outlive its process. The holder writes who it is into the file, so a refused writer can name it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
from pathlib import Path

from attnbench.core.errors import UserError

LOCK_FILE = ".lock"


class RunLock:
    """An exclusive lock on ``<run dir>/.lock``; :meth:`acquire` refuses (UserError) when another process holds it."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UserError(f"cannot open the lock file {self.path}: {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(fd)
            os.close(fd)
            raise UserError(
                f"run directory {self.path.parent} is in use by {holder}; wait for it to finish "
                "(one writer per run directory)"
            ) from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(["attnbench", *sys.argv[1:]])}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:  # a run directory dropped without a session (a refused option) frees its lock
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the last descriptor drops the flock


def _describe_holder(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        record = {}
    if not isinstance(record, dict) or "pid" not in record:
        return "another process (it has not written its name yet)"
    return f"PID {record.get('pid')} on {record.get('host', '?')} ({record.get('command', '?')})"
