"""Rows checked as they are read back: a corrupted or hand-edited result file costs its bad rows, not the reader.

Every reader (report, compare, --resume) goes through :func:`validated_text`: rows with the wrong number of
fields, a value of the wrong type or out of range, an unknown status, or a second row for a cell already
seen are left out, and the file gets one warning line saying how many and why.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from attnbench.runs.schema import COLUMN_KINDS, OK_REQUIRES, REPEATABLE_KEYS, ROW_KEYS, STATUSES

MAX_REASONS = 3  # reasons named in a warning; the rest are counted
SEED_LIMIT = 2**64  # torch.manual_seed takes 64-bit seeds


def _stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# where the one-line warnings go; tests and other front ends may replace it
warn: Callable[[str], None] = _stderr_warning
_warned: set[str] = set()  # a file read several times in one process is warned about once


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def check_value(column: str, text: str) -> str | None:
    """Why ``text`` is not a valid value of ``column``, or None when it is."""
    kind = COLUMN_KINDS.get(column)
    if kind is None or text == "":
        return None
    if kind == "status":
        return None if text in STATUSES else f"unknown status {text!r}"
    if kind == "bool":
        return None if text.lower() in ("true", "false") else f"{column} {text!r} is not true/false"
    value = _number(text)
    if value is None:
        return f"{column} {text!r} is not a number"
    if kind == "real":
        return None
    if math.isnan(value):
        return f"{column} is nan"
    if kind in ("count", "index", "seed"):
        if not math.isfinite(value) or not value.is_integer():
            return f"{column} {text!r} is not an integer"
        low = 1 if kind == "count" else 0
        if value < low:
            return f"{'non-positive' if low else 'negative'} {column}"
        if kind == "seed" and value >= SEED_LIMIT:
            return f"{column} {text} exceeds 64 bits"
        return None
    if value < 0:
        return f"negative {column}"
    if not math.isfinite(value):
        return f"{column} is not finite"
    if kind == "fraction" and value > 1:
        return f"{column} {text} is above 1"
    return None


def row_problem(header: Sequence[str], fields: Sequence[str], name: str) -> str | None:
    """Why a row (split into fields) is invalid under ``header``, or None."""
    if len(fields) != len(header):
        return f"{len(fields)} field{'s' if len(fields) != 1 else ''} (expected {len(header)})"
    row = dict(zip(header, fields, strict=True))
    for column in ROW_KEYS.get(name, ()):
        if column in row and row[column] == "":
            return f"empty {column}"
    if "status" in row and row["status"] == "":
        return "empty status"
    for column, text in row.items():
        problem = check_value(column, text)
        if problem is not None:
            return problem
    if row.get("status") == "ok":
        for column in OK_REQUIRES.get(name, ()):
            value = _number(row.get(column, "") or "nan")
            if value is None or not math.isfinite(value):
                return f"status ok without a finite {column}"
    return None


def validated_text(path: Path, text: str) -> str:
    """``text`` (a CSV file's complete lines) with only its valid rows; warns once per file about the rest."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        return text
    key_columns = [c for c in ROW_KEYS.get(path.name, ()) if c in header]
    if path.name in REPEATABLE_KEYS:
        key_columns = list(header)
    seen: dict[tuple[str, ...], int] = {}
    kept: list[list[str]] = []
    rejected: list[str] = []
    line = reader.line_num
    while True:
        start = line + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as err:  # e.g. a NUL byte: skip to the next physical line
            line = reader.line_num
            rejected.append(f"line {start}: unreadable ({err})")
            continue
        line = reader.line_num
        if not fields:
            continue  # a blank line is no row
        problem = row_problem(header, fields, path.name)
        if problem is None and key_columns:
            key = tuple(fields[header.index(c)] for c in key_columns)
            if key in seen:
                problem = f"duplicate of line {seen[key]}"  # the first row of a cell is the one kept
            else:
                seen[key] = start
        if problem is None:
            kept.append(fields)
        else:
            rejected.append(f"line {start}: {problem}")
    if not rejected:
        return text
    _report(path, rejected)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(kept)
    return out.getvalue()


def _report(path: Path, rejected: list[str]) -> None:
    more = len(rejected) - MAX_REASONS
    reasons = "; ".join(rejected[:MAX_REASONS]) + (f"; {more} more" if more > 0 else "")
    noun = "row" if len(rejected) == 1 else "rows"
    message = f"{path}: {len(rejected)} {noun} rejected ({reasons})"
    if message not in _warned:
        _warned.add(message)
        warn(message)
