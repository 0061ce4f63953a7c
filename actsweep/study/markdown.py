"""Markdown pipe tables: the one way the report, the comparisons and the seed plan write a table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def table_lines(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A table's lines: the header, its `|---|` rule, then one line per row (each cell as `str` gives it)."""
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(map(str, row)) + " |" for row in rows)]
