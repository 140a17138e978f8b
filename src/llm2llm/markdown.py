"""Markdown tables for report.md and compare.md: every table goes through `table`, which escapes its cells.

A cell may hold a `|` (the header `|D_i|`, a label, a path): unescaped, it splits the cell and the renderer
drops the whole table (its rows no longer match the delimiter row). A newline would end the row.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

# Backslash first, so the escapes added after it are not doubled. `<` would start an HTML tag ("<unk>" vanishes).
_ESCAPES = (("\\", "\\\\"), ("|", "\\|"), ("<", "\\<"))


def cell(value: Any) -> str:
    """One cell's text: pipes, backslashes and `<` escaped, line breaks folded to spaces."""
    text = " ".join(str(value).split())
    for raw, escaped in _ESCAPES:
        text = text.replace(raw, escaped)
    return text


def table(headers: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured pipe table; each row must have one value per header."""
    lines = [_row(headers), "|" + "---|" * len(headers)]
    for values in rows:
        values = list(values)
        if len(values) != len(headers):  # a short row would still render, silently shifted: refuse it here
            raise ValueError(f"table row has {len(values)} cells for {len(headers)} headers: {values}")
        lines.append(_row(values))
    return "\n".join(lines)


def _row(values: Sequence[Any]) -> str:
    return "| " + " | ".join(cell(value) for value in values) + " |"
