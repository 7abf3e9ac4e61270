"""Atomic file writes: a reader sees the old file or the whole new one, never half of it.

A failed run (bad input found late, a crash, a full disk) then leaves no
truncated instance, schedule or figure behind for a later step to trust.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; it becomes ``path`` only if the block succeeds.

    The temporary name keeps the suffix, so a writer that picks its format
    from it (matplotlib's ``savefig``) still does. Living in the same
    directory makes the final ``os.replace`` atomic. An OSError about the
    temporary file is re-raised naming ``path``, the file the user asked for.
    """
    path = Path(path)
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


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` all at once (see ``replacing``)."""
    with replacing(path) as tmp:
        tmp.write_text(text)
