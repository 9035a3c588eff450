"""Paths under a log root that more than one module writes (SPEC section 2).

``quarantine/`` keeps the bytes a crash left that are not a complete record or checkpoint
line: cut from their file by the next writer, kept for forensics, listed by ``rtrace verify``
as crash artefacts.
Tests: ``tests/test_faults.py`` (torn tails of day and checkpoint files).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from pathlib import Path

import platformdirs

__all__ = ["DAY_RE", "QUARANTINE", "fsync_dir", "is_day", "quarantine", "reader_cache"]

QUARANTINE = "quarantine"
#: A day file's name stem: ``YYYY-MM-DD`` (ASCII digits only).
DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")


def is_day(name: str) -> bool:
    """Whether ``name`` is a day (``YYYY-MM-DD``) that a day file can be named for."""
    return DAY_RE.match(name) is not None


def reader_cache(root: Path) -> Path:
    """Where a reader keeps derived state (index, tree hashes) of the log at ``root``: the
    per-user cache directory, keyed by the log's path and the first bytes of its first day
    file (its identity), so that reading never writes under the log root (SPEC 4a). Falls
    back to a private temporary directory when the cache directory cannot be written."""
    first = b""
    with contextlib.suppress(OSError, ValueError):
        days = sorted(n for n in os.listdir(root) if n.endswith(".jsonl") and is_day(n[:-6]))
        if days:
            with open(root / days[0], "rb") as fh:
                first = fh.read(4096).split(b"\n", 1)[0]
    key = hashlib.sha256(os.fsencode(str(root)) + b"\0" + first).hexdigest()[:24]
    base = Path(platformdirs.user_cache_dir("reasoning-trace", appauthor=False)) / "logs" / key
    try:
        base.mkdir(parents=True, exist_ok=True)
        if os.access(base, os.W_OK):
            return base
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="rtrace-reader-"))


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
    try:
        with open(qpath, "xb") as fh:
            fh.write(fragment)
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(qdir)
    except OSError:
        qpath.unlink(missing_ok=True)  # no empty or partial copy (a full disk): retried later
        raise
    return qpath
