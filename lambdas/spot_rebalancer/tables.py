"""The CLI's tables: a header row, then the rows; each column as wide as its widest cell."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

GAP = "   "


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """The lines of the table, trailing blanks trimmed. Cells are shown with str(); None is "-"."""
    cells = [list(headers)] + [["-" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return [GAP.join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in cells]
