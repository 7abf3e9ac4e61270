"""Plain text tables: the one column layout the command line, the runtime's traces and
the benchmarks print."""

from __future__ import annotations

from collections.abc import Sequence


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def table(header: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "  ") -> str:
    """Plain aligned columns: numbers to the right, everything else to the left."""
    body = [[str(c) for c in row] for row in rows]
    cells = [list(header), *body]
    widths = [max(len(row[k]) for row in cells) for k in range(len(header))]
    numeric = [bool(body) and all(is_number(row[k]) for row in body) for k in range(len(header))]
    lines = [
        indent
        + "  ".join(
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(row, widths, numeric, strict=True)
        ).rstrip()
        for row in cells
    ]
    return "\n".join(lines)
