"""What changed in a log's files between two looks: the tripwires of ``verify_incremental``.

A ``Snapshot`` is the ``os.stat`` of a log's day files, checkpoint files, verifier keys and the
names in ``quarantine/``. An append-only log may change between two snapshots in one way only:
its newest day file and newest checkpoint file grow (same inode, more bytes), and files for
later days appear. ``Snapshot.changed_since`` names anything else: a file that is gone, an
older file that changed at all, the newest one shrinking or rewritten in place (its mtime
moved, its size did not), a file appearing for an earlier day, the verifier keys changing, a
new fragment in quarantine. Each is a reason to read every record again (a full pass).
An edit of the newest day file made while it is also appended to is not told apart from the
append; the scheduled full pass finds it. Reading only: nothing is opened for writing.
Tests: ``tests/test_verify_incremental.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .layout import Layout

__all__ = ["Mark", "Snapshot"]


@dataclass(frozen=True)
class Mark:
    """A file as ``os.stat`` saw it: inode, size, modification time (ns)."""

    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> Mark | None:
        """The mark of ``path``, or ``None`` if it is not there."""
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class Snapshot:
    """The log's files as they were when a check began."""

    days: dict[str, Mark]
    checkpoints: dict[str, Mark]
    vkey: Mark | None
    quarantine: frozenset[str]

    @classmethod
    def take(cls, layout: Layout) -> Snapshot:
        """Stat the day files, checkpoint files, verifier keys and quarantine of ``layout``."""
        days = {d: m for d in layout.days() if (m := Mark.of(layout.day_file(d)))}
        cps = {p.name: m for p in layout.checkpoint_files() if (m := Mark.of(p))}
        try:
            fragments = frozenset(os.listdir(layout.quarantine))
        except (FileNotFoundError, NotADirectoryError):
            fragments = frozenset()
        return cls(days, cps, Mark.of(layout.vkey), fragments)

    def changed_since(self, old: Snapshot) -> str | None:
        """Why the log cannot have only grown since ``old`` (then a full pass is due)."""
        return (
            _grown_only("day file", old.days, self.days)
            or _grown_only("checkpoint file", old.checkpoints, self.checkpoints)
            or ("the verifier keys changed" if old.vkey != self.vkey else None)
            or ("a new fragment in quarantine/" if old.quarantine != self.quarantine else None)
        )


def _grown_only(what: str, old: dict[str, Mark], new: dict[str, Mark]) -> str | None:
    """Why ``new`` is not ``old`` with only its newest file appended to and later ones added."""
    if not old:
        return None
    last = max(old)
    for name, mark in old.items():
        now = new.get(name)
        if now is None:
            return f"{what} {name} is gone"
        if name != last and now != mark:
            return f"{what} {name} changed after its day"
        if name == last and (
            now.ino != mark.ino
            or now.size < mark.size
            or (now.size == mark.size and now.mtime_ns != mark.mtime_ns)
        ):
            return f"{what} {name} was rewritten, not appended to"
    early = [name for name in new if name not in old and name < last]
    return f"{what} {early[0]} appeared before {last}" if early else None
