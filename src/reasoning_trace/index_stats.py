"""The aggregates ``stats`` reads from the derived index instead of every record.

Per day file the index keeps its decisions per (record day, action, verdict, node) and votes
against per voter of each (``index_build.DayTally``), added to as the index catches up. They are
believed only for a day file that is as it was when they were counted — the same size, inode,
modification time and status-change time (``touch -d`` can put an mtime back, never a ctime) —
and only when their tag, an HMAC-SHA256 under a random key kept in a file
beside the index (not in it), still matches: rows edited in the database, or a day file changed
behind the index's back, make ``stats`` count that day file from its records instead. A day file
that a time range covers only in part is counted from its records too, so the answer is always
the one a full read gives (``Stats.of``).
Tests: ``tests/test_index_build.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from .index_build import DayTally
from .query import Filter, Tally

__all__ = [
    "AGG_SCHEMA",
    "AGG_TABLES",
    "Aggregates",
    "Plan",
    "answerable",
    "size_and_stamp",
    "stamp",
]

#: The aggregate tables (part of the index's schema).
AGG_TABLES = ("agg_files", "agg_counts", "agg_vetoes")
AGG_SCHEMA = """
CREATE TABLE IF NOT EXISTS agg_files (day TEXT PRIMARY KEY, size INTEGER NOT NULL,
    stamp TEXT NOT NULL, lo INTEGER, hi INTEGER, tag BLOB);
CREATE TABLE IF NOT EXISTS agg_counts (day TEXT NOT NULL, rday TEXT NOT NULL,
    action TEXT NOT NULL, approved INTEGER NOT NULL, node TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (day, rday, action, approved, node));
CREATE TABLE IF NOT EXISTS agg_vetoes (day TEXT NOT NULL, rday TEXT NOT NULL,
    action TEXT NOT NULL, approved INTEGER NOT NULL, node TEXT NOT NULL, voter TEXT NOT NULL,
    n INTEGER NOT NULL, PRIMARY KEY (day, rday, action, approved, node, voter));
"""

_KEY_BYTES = 32


def size_and_stamp(path: str) -> tuple[int, str]:
    """(size, ``stamp``) of the file at ``path``, or ``(-1, "")`` when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (-1, "")
    return (st.st_size, stamp(st))


def stamp(st: os.stat_result) -> str:
    """What must not have changed since a day file was counted: ``inode:mtime_ns:ctime_ns``.

    A rewrite in place changes the mtime and the ctime; ``touch -d`` or ``os.utime`` can put
    the mtime back but sets the ctime to now; a file replaced by another has another inode."""
    return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def answerable(flt: Filter) -> bool:
    """Whether the aggregates can answer ``flt`` (for whole day files): no voter or subject
    criterion, and no node criterion of ``""`` (records without a node count under it)."""
    return flt.voter is None and not flt.subject and flt.node != ""


class Plan:
    """How ``stats`` answers a filter: ``tally`` holds what the aggregates counted, ``scan``
    lists the day files to count from their records."""

    def __init__(self) -> None:
        self.tally = Tally()
        self.scan: list[str] = []
        self.refused: list[str] = []  # of ``scan``: counts kept but not believed


class Aggregates:
    """The aggregate tables of the index ``db`` at ``path`` and their key file."""

    def __init__(self, path: Path) -> None:
        self._key_path = Path(f"{path}.key")
        self._key: bytes | None = None

    # --- the key -----------------------------------------------------------------------------

    def key(self) -> bytes:
        """The tag key: read from its file, or made (32 random bytes, mode 0600) when there is
        none yet; a key file of another size is replaced (every tag then fails: recounted)."""
        if self._key is None:
            self._key = self._load_key()
        return self._key

    def _load_key(self) -> bytes:
        path = str(self._key_path)
        for _attempt in range(3):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                pass
            else:
                with os.fdopen(fd, "rb") as fh:
                    key = fh.read(_KEY_BYTES + 1)
                if len(key) == _KEY_BYTES:
                    return key
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            tmp = f"{path}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, os.urandom(_KEY_BYTES))
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)  # whole, and never over another process's key
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        raise OSError(f"cannot keep the index key {path}")

    def _tag(
        self, day: str, head: tuple[object, ...], counts: list[Any], vetoes: list[Any]
    ) -> bytes:
        """The tag of a day file's aggregates: its (size, stamp, lo, hi) and rows, in order."""
        body = orjson.dumps([day, list(head), counts, vetoes])
        return hmac.new(self.key(), body, hashlib.sha256).digest()

    # --- writing (inside the index's write transaction) ----------------------------------------

    def add(
        self,
        db: sqlite3.Connection,
        day: str,
        tally: DayTally,
        size: int,
        path: str,
        before: tuple[int, str],
    ) -> None:
        """Add a day file's ``tally`` (of its lines up to byte ``size``) to its aggregates and
        tag them with the file's ``stamp`` when its (size, stamp) is still ``before`` (taken
        before its lines were read) and it was read to its end; else untagged (then ``stats``
        counts it from its records until it is counted again): a file written while it was
        read is never believed as read."""
        counts = dict(tally.counts)
        vetoes = dict(tally.vetoes)
        lo, hi = tally.lo, tally.hi
        old = db.execute("SELECT lo, hi FROM agg_files WHERE day=?", (day,)).fetchone()
        if old is not None:
            for *key, n in db.execute(_COUNTS + " WHERE day=?", (day,)):
                counts[tuple(key)] = counts.get(tuple(key), 0) + n
            for *key, n in db.execute(_VETOES + " WHERE day=?", (day,)):
                vetoes[tuple(key)] = vetoes.get(tuple(key), 0) + n
            lo = old[0] if lo is None or (old[0] is not None and old[0] < lo) else lo
            hi = old[1] if hi is None or (old[1] is not None and old[1] > hi) else hi
            db.execute("DELETE FROM agg_counts WHERE day=?", (day,))
            db.execute("DELETE FROM agg_vetoes WHERE day=?", (day,))
        count_rows = sorted((*key, n) for key, n in counts.items())
        veto_rows = sorted((*key, n) for key, n in vetoes.items())
        db.executemany(
            "INSERT INTO agg_counts VALUES (?,?,?,?,?,?)", [(day, *r) for r in count_rows]
        )
        db.executemany(
            "INSERT INTO agg_vetoes VALUES (?,?,?,?,?,?,?)", [(day, *r) for r in veto_rows]
        )
        now = size_and_stamp(path)
        mark = now[1] if now == before == (size, now[1]) else ""
        head = (size, mark, lo, hi)
        tag = self._tag(day, head, count_rows, veto_rows)
        db.execute("INSERT OR REPLACE INTO agg_files VALUES (?,?,?,?,?,?)", (day, *head, tag))

    def replace(
        self,
        db: sqlite3.Connection,
        day: str,
        tally: DayTally,
        size: int,
        path: str,
        before: tuple[int, str],
    ) -> None:
        """Count a day file afresh: its aggregates become ``tally`` (of its first ``size``
        bytes, read after its (size, stamp) was ``before``)."""
        for table in AGG_TABLES:
            db.execute(f"DELETE FROM {table} WHERE day=?", (day,))
        self.add(db, day, tally, size, path, before)

    @staticmethod
    def clear(db: sqlite3.Connection) -> None:
        """Forget every aggregate (a rebuild)."""
        for table in AGG_TABLES:
            db.execute(f"DELETE FROM {table}")

    # --- reading -----------------------------------------------------------------------------

    def plan(self, db: sqlite3.Connection, flt: Filter, days: Iterable[tuple[str, str]]) -> Plan:
        """Count ``flt`` over the day files ``days`` ((day, path), those a full read would
        read): from the aggregates where they are believed and the file lies wholly inside the
        time range, else listed to be counted from the records."""
        plan = Plan()
        files = {row[0]: row[1:] for row in db.execute("SELECT * FROM agg_files")}
        counts: dict[str, list[Any]] = {}
        for day, *row in db.execute(_COUNTS_BY_DAY):
            counts.setdefault(day, []).append(row)
        vetoes: dict[str, list[Any]] = {}
        for day, *row in db.execute(_VETOES_BY_DAY):
            vetoes.setdefault(day, []).append(row)
        since, until = flt.since_us, flt.until_us
        for day, path in days:
            row = files.get(day)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            if row is None:
                plan.scan.append(day)
                continue
            size, mark, lo, hi, tag = row
            day_counts, day_vetoes = counts.get(day, []), vetoes.get(day, [])
            if (st.st_size, stamp(st)) != (size, mark) or not hmac.compare_digest(
                bytes(tag or b""), self._tag(day, (size, mark, lo, hi), day_counts, day_vetoes)
            ):
                plan.scan.append(day)  # changed since it was counted, or not as tagged
                plan.refused.append(day)
                continue
            if (
                lo is None
                or (since is not None and hi < since)
                or (until is not None and lo >= until)
            ):
                continue  # no record, or none in the range
            if (since is not None and lo < since) or (until is not None and hi >= until):
                plan.scan.append(day)  # in the range in part: count its records
                continue
            for rday, action, approved, node, n in day_counts:
                if _kept(flt, action, approved, node):
                    plan.tally.count(rday, action, bool(approved), node, n)
            for _rday, action, approved, node, voter, n in day_vetoes:
                if _kept(flt, action, approved, node):
                    plan.tally.veto(voter, n)
        return plan


def _kept(flt: Filter, action: str, approved: int, node: str) -> bool:
    """Whether aggregates of this action, verdict and node pass ``flt``'s other criteria."""
    return (
        (flt.action is None or action == flt.action)
        and (flt.approved is None or bool(approved) is flt.approved)
        and (flt.node is None or node == flt.node)
    )


_COUNTS = "SELECT rday, action, approved, node, n FROM agg_counts"
_VETOES = "SELECT rday, action, approved, node, voter, n FROM agg_vetoes"
_COUNTS_BY_DAY = "SELECT day, rday, action, approved, node, n FROM agg_counts ORDER BY 1,2,3,4,5"
_VETOES_BY_DAY = (
    "SELECT day, rday, action, approved, node, voter, n FROM agg_vetoes ORDER BY 1,2,3,4,5,6"
)
