"""Atomic file writes: a reader sees the old file or the whole new one, never half of it.

A failed run (bad input found late, a crash, a full disk) then leaves no
truncated instance, schedule or figure behind for a later step to trust.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmoffload.errors import OffloadError


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; it becomes ``path`` only if the block succeeds.

    The temporary name keeps the suffix, so a writer that picks its format
    from it (matplotlib's ``savefig``) still does. Living in the same
    directory makes the final ``os.replace`` atomic. An OSError about the
    temporary file is re-raised naming ``path``, the file the user asked for.
    """
    path = Path(path)
    check_output(path)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename is not None and os.fspath(exc.filename) == os.fspath(tmp):
            raise OSError(exc.errno, exc.strerror, os.fspath(path)) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def check_output(path: str | Path, directory: bool = False) -> None:
    """Refuse an output path that is a symbolic link, or that exists as anything but a
    regular file (a directory, if ``directory``): replacing it would silently put a
    regular file where the link's target or a FIFO's reader expects the data."""
    path = Path(path)
    if path.is_symlink():
        raise OffloadError(f"{path}: is a symbolic link; refusing to write over it")
    kind, fits = ("a directory", path.is_dir()) if directory else ("a regular file", path.is_file())
    if path.exists() and not fits:
        raise OffloadError(f"{path}: exists and is not {kind}; refusing to write over it")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` all at once (see ``replacing``)."""
    with replacing(path) as tmp:
        tmp.write_text(text)


def write_csv(path: str | Path, rows: list[dict[str, Any]], float_format: str = "") -> None:
    """Rows as a CSV file, columns in first-seen order, written at once; floats formatted
    with ``float_format`` when one is given (``str`` otherwise, which round-trips)."""
    buf = io.StringIO()
    names = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    if float_format:
        rows = [
            {k: format(v, float_format) if isinstance(v, float) else v for k, v in row.items()}
            for row in rows
        ]
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())
