"""Appending whole lines to a small file (checkpoint lists, verifier keys, witness evidence):
all of the bytes, fsynced, or none of them.

``append_whole`` writes with ``O_APPEND`` and fsyncs; on failure it cuts the file back to its
size before, so a full disk never leaves half a line. The day files have their own, batched
writer (``day_writer``). Tests: ``tests/test_faults.py`` (a full disk),
``tests/test_checkpoint.py``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["append_whole", "ends_with_newline"]

logger = logging.getLogger("reasoning_trace")


def ends_with_newline(path: Path) -> bool:
    """Whether the non-empty file at ``path`` ends with a newline (a whole last line)."""
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def append_whole(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` and fsync; on failure cut the file back to its old size."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(path, flags, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
            except OSError as exc:
                logger.error(
                    "reasoning_trace: could not cut %s back to %d bytes: %s", path, size, exc
                )
            raise
    finally:
        os.close(fd)
