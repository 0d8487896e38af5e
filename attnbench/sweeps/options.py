"""Parsing the CLI's value syntaxes: length ranges and byte sizes."""

from __future__ import annotations

import re
from collections.abc import Iterable

from attnbench.core.errors import UserError

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 2**10, "m": 1000**2, "mb": 1000**2, "mib": 2**20,
          "g": 1000**3, "gb": 1000**3, "gib": 2**30, "t": 1000**4, "tb": 1000**4, "tib": 2**40}  # fmt: skip


def parse_lengths(values: Iterable[str], *, option: str = "--seq-len") -> list[int]:
    """``["256..2048", "3000"]`` → ``[256, 512, 1024, 2048, 3000]``: ``a..b`` doubles from a up to b inclusive."""
    lengths: set[int] = set()
    for raw in values:
        for value in str(raw).split(","):
            text = value.strip()
            if ".." in text:
                low_text, _, high_text = text.partition("..")
                low, high = _positive_int(low_text, option, text), _positive_int(high_text, option, text)
                if high < low:
                    raise UserError(f"{option} {text}: the range ends below its start")
                n = low
                while n <= high:
                    lengths.add(n)
                    n *= 2
            else:
                lengths.add(_positive_int(text, option, text))
    if not lengths:
        raise UserError(f"{option} needs at least one length")
    return sorted(lengths)


def _positive_int(text: str, option: str, whole: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"{option} {whole!r}: {text!r} is not an integer (use e.g. 256, or 256..8192)") from None
    if value < 1:
        raise UserError(f"{option} {whole!r}: lengths must be >= 1")
    return value


def parse_bytes(text: str, *, available: int, option: str = "--memory-budget") -> int:
    """``"75%"`` (of ``available``), ``"8GiB"``, ``"500MB"`` or a plain number of bytes."""
    raw = text.strip().lower().replace(" ", "")
    if raw.endswith("%"):
        try:
            fraction = float(raw[:-1]) / 100
        except ValueError:
            raise UserError(f"{option} {text!r}: expected a percentage like 75%") from None
        if not 0 < fraction <= 1:
            raise UserError(f"{option} {text!r}: a percentage must be in (0, 100]")
        return int(available * fraction)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]*)", raw)
    if not match or match.group(2) not in _UNITS:
        raise UserError(f"{option} {text!r}: expected a size like 8GiB, 500MB, 75% or a number of bytes")
    value = int(float(match.group(1)) * _UNITS[match.group(2)])
    if value <= 0:
        raise UserError(f"{option} {text!r}: must be positive")
    return value
