"""Markdown pieces of the report: a GitHub-flavoured table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> str:
    """A GitHub-flavoured table; ``align`` is one letter per column (l, r), left by default."""
    header = list(header)
    align = align.ljust(len(header), "l")
    rule = ["---:" if a == "r" else "---" for a in align]

    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([line(header), line(rule), *(line(r) for r in rows)])
