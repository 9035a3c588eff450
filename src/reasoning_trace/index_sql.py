"""The index's tables, and the SQL a ``Filter`` becomes (shared by the file store's index and
the fleet index).

``records`` holds each record's place (day file, byte offset, length) and the fields filters
use; ``vetoes`` who voted against what; ``subjects`` subject values as text. The conditions
``where_sql`` builds decide a filter exactly when ``is_exact`` says so; otherwise every row
found is checked against the record it points to.
Tests: ``tests/test_index.py``, ``tests/test_query.py``, ``tests/test_fleet_index.py``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from .layout import drop_links

if TYPE_CHECKING:
    from .query import Filter

__all__ = [
    "MAX_SEQ",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SECONDARY",
    "TABLES",
    "DerivedDatabase",
    "is_exact",
    "stats_sql",
    "subject_text",
    "where_sql",
]

#: The tables of ``SCHEMA``.
TABLES = ("records", "vetoes", "subjects", "meta")

SCHEMA_VERSION = 5
MAX_SEQ = (1 << 63) - 1  # the largest seq SQLite can hold
SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL, day TEXT NOT NULL,
    offset INTEGER NOT NULL, length INTEGER NOT NULL,
    ts INTEGER NOT NULL, action TEXT NOT NULL, approved INTEGER NOT NULL, node TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS records_id ON records(id);
CREATE INDEX IF NOT EXISTS records_action ON records(action, ts);
CREATE INDEX IF NOT EXISTS records_action_seq ON records(action, seq);
CREATE INDEX IF NOT EXISTS records_ts ON records(ts);
CREATE TABLE IF NOT EXISTS vetoes (voter TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS vetoes_voter ON vetoes(voter, seq);
CREATE TABLE IF NOT EXISTS subjects (key TEXT NOT NULL, value TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS subjects_kv ON subjects(key, value, seq);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v);
"""

#: The secondary indexes (name: statement), dropped while a first build loads its rows and
#: made again after it: faster than keeping them up to date row by row.
SECONDARY = {
    name: f"CREATE {kind}INDEX IF NOT EXISTS {name} ON {on}"
    for kind, name, on in (
        ("UNIQUE ", "records_id", "records(id)"),
        ("", "records_action", "records(action, ts)"),
        ("", "records_action_seq", "records(action, seq)"),
        ("", "records_ts", "records(ts)"),
        ("", "vetoes_voter", "vetoes(voter, seq)"),
        ("", "subjects_kv", "subjects(key, value, seq)"),
    )
}


def is_exact(flt: Filter) -> bool:
    """Whether the SQL conditions decide the filter exactly (subject values given as text
    are compared as text, which is the filter's own rule for them)."""
    return all(isinstance(v, str) for v in flt.subject.values())


def subject_text(value: object) -> str:
    """How a subject value is indexed: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def where_sql(flt: Filter, probe: bool = False) -> tuple[str, list[object]]:
    """SQL conditions on ``records r`` for a filter (subject values compared as text); the
    fleet index (``fleet_index.py``) shares them.

    ``probe``: test vetoes and subjects per record (``EXISTS``), for a page that stops
    after LIMIT rows walking seq order; else gather the matching seqs once (``IN``), for
    answers that return every match.
    """
    conds: list[str] = ["1"]
    args: list[object] = []
    if flt.since_us is not None:
        conds.append("r.ts >= ?")
        args.append(flt.since_us)
    if flt.until_us is not None:
        conds.append("r.ts < ?")
        args.append(flt.until_us)
    if flt.action is not None:
        conds.append("r.action = ?")
        args.append(flt.action)
    if flt.approved is not None:
        conds.append("r.approved = ?")
        args.append(int(flt.approved))
    if flt.node is not None:
        conds.append("r.node = ?")
        args.append(flt.node)
    if flt.voter is not None:
        conds.append(
            "EXISTS (SELECT 1 FROM vetoes v WHERE v.voter = ? AND v.seq = r.seq)"
            if probe
            else "r.seq IN (SELECT seq FROM vetoes WHERE voter = ?)"
        )
        args.append(flt.voter)
    for key, value in flt.subject.items():
        conds.append(
            "EXISTS (SELECT 1 FROM subjects s WHERE s.key = ? AND s.value = ? AND s.seq = r.seq)"
            if probe
            else "r.seq IN (SELECT seq FROM subjects WHERE key = ? AND value = ?)"
        )
        args.extend((key, subject_text(value)))
    return " AND ".join(conds), args


def stats_sql(where: str) -> dict[str, str]:
    """The aggregate queries of ``stats`` over ``records r`` and ``vetoes v`` rows that
    ``where`` selects (shared with the fleet index)."""
    return {
        "actions": f"SELECT action, COUNT(*), SUM(approved) FROM records r WHERE {where} "
        "GROUP BY action ORDER BY COUNT(*) DESC, action",
        "voters": f"SELECT v.voter, COUNT(*) FROM vetoes v JOIN records r ON r.seq = v.seq "
        f"WHERE {where} GROUP BY v.voter ORDER BY COUNT(*) DESC, v.voter",
        "days": f"SELECT day, COUNT(*), SUM(approved) FROM records r WHERE {where} "
        "GROUP BY day ORDER BY day",
        "nodes": f"SELECT COALESCE(node, ''), COUNT(*), SUM(approved) FROM records r "
        f"WHERE {where} GROUP BY COALESCE(node, '') ORDER BY 1",
    }


class DerivedDatabase:
    """A derived SQLite file (losing it loses nothing, so ``synchronous=OFF``; WAL so readers
    and the one updater do not block each other), made afresh from ``schema`` when its
    ``user_version`` is not ``version`` or it is damaged. ``lock`` serialises this process's
    users of the connection."""

    def __init__(self, path: Path, schema: str, version: int, tables: Sequence[str]) -> None:
        self.path = path
        self.lock = threading.Lock()
        self._schema, self._version, self._tables = schema, version, tuple(tables)
        self._db: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        if db.execute("PRAGMA user_version").fetchone()[0] != self._version:
            for table in self._tables:  # another layout (it is derived): start afresh
                db.execute(f"DROP TABLE IF EXISTS {table}")
            db.execute(f"PRAGMA user_version = {self._version}")
        db.executescript(self._schema)
        return db

    def conn(self) -> sqlite3.Connection:
        """The connection, opened on first use (a damaged file is dropped and made afresh)."""
        if self._db is None:
            os.makedirs(self.path.parent, exist_ok=True)
            drop_links(self.path, ("", "-wal", "-shm"))  # never written through a link
            try:
                self._db = self._open()
            except sqlite3.DatabaseError:
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{self.path}{suffix}")
                self._db = self._open()
        return self._db

    def close(self) -> None:
        """Close the connection (the next ``conn`` opens it again)."""
        with self.lock:
            if self._db is not None:
                self._db.close()
                self._db = None
