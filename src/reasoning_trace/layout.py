"""Paths under a log root that more than one module writes (SPEC section 2).

``quarantine/`` keeps the bytes a crash left that are not a complete record or checkpoint
line: cut from their file by the next writer, kept for forensics, listed by ``rtrace verify``
as crash artefacts.
Tests: ``tests/test_faults.py`` (torn tails of day and checkpoint files).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["QUARANTINE", "fsync_dir", "quarantine"]

QUARANTINE = "quarantine"


def fsync_dir(path: Path | str) -> None:
    """Make a directory's entries (a created, renamed or removed file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def quarantine(root: Path, name: str, fragment: bytes) -> Path:
    """Keep ``fragment`` (bytes a crash left, never acknowledged) durably as
    ``<root>/quarantine/<name>.<ns>.torn``; return its path."""
    qdir = root / QUARANTINE
    qdir.mkdir(exist_ok=True)
    qpath = qdir / f"{name}.{time.time_ns()}.torn"
    with open(qpath, "xb") as fh:
        fh.write(fragment)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(qdir)
    return qpath
