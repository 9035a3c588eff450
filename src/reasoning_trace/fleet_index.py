"""The fleet index: every node's replicated records in a SQLite file in the user's cache, kept
up to date incrementally from the stream, so fleet ``query`` and ``stats`` answer in
milliseconds instead of reading the whole stream each time.

It has the local index's tables and conditions (``index_sql.where_sql``, ``index_sql.stats_sql``),
keyed by stream seq instead of log seq, and it keeps each record's stored line, so a hit is
answered without going back to the server. It is derived: deleting it loses nothing, a
stream that was re-created (another creation time) makes it start afresh, and it lives in
``$REASONING_TRACE_CACHE`` if set, else the per-user cache directory, one file per server
set and stream (credentials are not part of the name).

Each catch-up reads the decision subjects from the stream seq after the last one it holds,
with an ordered consumer, up to the stream's end at that moment, and commits the rows with
that position in one transaction. The position lives in the cache file with the rows, not in
a durable consumer on the server: a consumer's ack floor and the file could disagree after a
crash or a deleted cache, and readers would need rights to create durable consumers.
Foreign messages (not records of their subject's node) are kept aside and reported by
every query, as the stream readers report them.
Counting stats from it is ``fleet_stats.py``.
Tests: ``tests/test_fleet_index.py``; benchmark: ``bench/bench_fleet.py``.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import platformdirs

from .errors import CorruptLine, StorageError
from .fleet_stats import count_stats
from .index_sql import DerivedDatabase, is_exact, subject_text, where_sql
from .jetstream import decision_subject, node_of, parse_servers
from .query import Filter, Stats
from .record import Decision, decision_from_dict
from .stream_messages import leaf_of
from .stream_reader import StreamReader

__all__ = ["FleetIndex", "cache_dir"]

SCHEMA_VERSION = 2
COMMIT_EVERY = 20_000  # rows per transaction while catching up
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY, rseq INTEGER NOT NULL, id TEXT NOT NULL, day TEXT NOT NULL,
    ts INTEGER NOT NULL, action TEXT NOT NULL, approved INTEGER NOT NULL, node TEXT NOT NULL,
    line BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS records_ts ON records(ts);
CREATE INDEX IF NOT EXISTS records_action ON records(action, ts);
CREATE INDEX IF NOT EXISTS records_node ON records(node, ts);
CREATE TABLE IF NOT EXISTS vetoes (voter TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS vetoes_voter ON vetoes(voter, seq);
CREATE TABLE IF NOT EXISTS subjects (key TEXT NOT NULL, value TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS subjects_kv ON subjects(key, value, seq);
CREATE TABLE IF NOT EXISTS foreign_messages (seq INTEGER PRIMARY KEY, subject TEXT, why TEXT);
CREATE TABLE IF NOT EXISTS daily (
    day TEXT NOT NULL, node TEXT NOT NULL, action TEXT NOT NULL, approved INTEGER NOT NULL,
    n INTEGER NOT NULL, PRIMARY KEY (day, node, action, approved));
CREATE TABLE IF NOT EXISTS daily_vetoes (
    day TEXT NOT NULL, node TEXT NOT NULL, action TEXT NOT NULL, approved INTEGER NOT NULL,
    voter TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (day, node, action, approved, voter));
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v);
"""

_TABLES = ("records", "vetoes", "subjects", "foreign_messages", "daily", "daily_vetoes", "meta")


def cache_dir() -> Path:
    """Where fleet indexes live: ``$REASONING_TRACE_CACHE``, else the per-user cache."""
    base = os.environ.get("REASONING_TRACE_CACHE")
    if base:
        return Path(base) / "fleet"
    return Path(platformdirs.user_cache_dir("reasoning-trace", appauthor=False)) / "fleet"


def _cache_name(url: str, stream: str) -> str:
    """One file per server set and stream; user names and passwords are left out."""
    hosts = sorted(u.split("://", 1)[-1].rpartition("@")[2] for u in parse_servers(url))
    digest = hashlib.sha256(f"{','.join(hosts)}|{stream}".encode()).hexdigest()[:24]
    return f"{stream}-{digest}.sqlite"


class FleetIndex:
    """The records of every node in ``fleet``'s stream (read by any ``StreamReader``, a
    ``Fleet`` in practice), indexed in a cache file."""

    def __init__(self, fleet: StreamReader, path: str | os.PathLike[str] | None = None) -> None:
        self.fleet = fleet
        self.path = (
            Path(path) if path is not None else cache_dir() / _cache_name(fleet.url, fleet.stream)
        )
        self._derived = DerivedDatabase(self.path, _SCHEMA, SCHEMA_VERSION, _TABLES)
        self._lock = self._derived.lock
        self._conn = self._derived.conn

    def close(self) -> None:
        """Close the database connection."""
        self._derived.close()

    # --- catching up ---------------------------------------------------------------------------

    def catch_up(self) -> int:
        """Index what the stream received since the last catch-up; the rows added."""
        info = self.fleet.info()
        created = str(info.created)
        try:
            with self._lock:
                db = self._conn()
                meta = dict(db.execute("SELECT k, v FROM meta").fetchall())
                if meta.get("created") not in (None, created):
                    self._reset(db)  # another stream of the same name: start afresh
                    meta = {}
                after = int(meta.get("last_sseq", 0))
                end = int(info.state.last_seq or 0)
                if after >= end:
                    return 0
                return self._index(db, after, end, created)
        except sqlite3.Error as exc:
            raise StorageError(f"could not update the fleet index {self.path}: {exc}") from exc

    def _reset(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        for table in _TABLES:
            db.execute(f"DELETE FROM {table}")
        db.execute("COMMIT")

    def _index(self, db: sqlite3.Connection, after: int, end: int, created: str) -> int:
        """Index the decision messages after stream seq ``after``; ``end`` is the stream's
        last seq before reading began (what is at or below it is all read by then)."""
        rows: list[tuple[Any, ...]] = []
        vetoes: list[tuple[str, int]] = []
        subjects: list[tuple[str, str, int]] = []
        foreign: list[tuple[int, str, str]] = []
        daily: dict[tuple[str, str, str, int], int] = {}
        daily_vetoes: dict[tuple[str, str, str, int, str], int] = {}
        added = 0
        last = after

        def commit() -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR IGNORE INTO records VALUES (?,?,?,?,?,?,?,?,?)", rows)
                db.executemany("INSERT INTO vetoes VALUES (?,?)", vetoes)
                db.executemany("INSERT INTO subjects VALUES (?,?,?)", subjects)
                db.executemany("INSERT OR IGNORE INTO foreign_messages VALUES (?,?,?)", foreign)
                db.executemany(
                    "INSERT INTO daily VALUES (?,?,?,?,?) "
                    "ON CONFLICT DO UPDATE SET n = n + excluded.n",
                    [(*k, n) for k, n in daily.items()],
                )
                db.executemany(
                    "INSERT INTO daily_vetoes VALUES (?,?,?,?,?,?) "
                    "ON CONFLICT DO UPDATE SET n = n + excluded.n",
                    [(*k, n) for k, n in daily_vetoes.items()],
                )
                db.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?,?)",
                    [("last_sseq", last), ("created", created)],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            rows.clear()
            vetoes.clear()
            subjects.clear()
            foreign.clear()
            daily.clear()
            daily_vetoes.clear()

        for msg in self.fleet.messages(decision_subject("*"), start=after + 1):
            sseq = msg.metadata.sequence.stream
            last = sseq
            subject = msg.subject
            node = node_of(subject)
            line = msg.data or b""
            try:
                d = decision_from_dict(orjson.loads(line), line)
            except ValueError as exc:
                leaf = leaf_of(line, node, msg.headers)  # a line of the legacy prefix?
                if leaf is None:
                    foreign.append((sseq, subject, f"not a record: {exc}"))
                if leaf is None or leaf[1] is None:
                    continue
                d = leaf[1]
            if d.node not in (None, node):
                foreign.append((sseq, subject, f"a record of node {d.node!r} on {node!r}'s"))
                continue
            ts = round(d.timestamp * 1_000_000)
            dkey = (d.day, node, d.action, int(d.approved))
            rows.append((sseq, d.seq, d.id, d.day, ts, d.action, int(d.approved), node, line))
            daily[dkey] = daily.get(dkey, 0) + 1
            for voter, vote in d.votes.items():
                if isinstance(vote, dict) and vote.get("passed") is False:
                    vetoes.append((voter, sseq))
                    vkey = (*dkey, voter)
                    daily_vetoes[vkey] = daily_vetoes.get(vkey, 0) + 1
            for key, value in d.subject.items():
                if isinstance(value, str | int | float | bool) or value is None:
                    subjects.append((key, subject_text(value), sseq))
            added += 1
            if len(rows) >= COMMIT_EVERY:
                commit()
        last = max(last, end)
        commit()
        return added

    # --- queries -------------------------------------------------------------------------------

    def _report_foreign(self, flt: Filter) -> None:
        sql = "SELECT seq, subject, why FROM foreign_messages"
        args: list[object] = []
        if flt.node is not None:
            sql += " WHERE subject = ?"
            args.append(decision_subject(flt.node))
        with self._lock:
            found = self._conn().execute(sql + " ORDER BY seq", args).fetchall()
        for sseq, subject, why in found:
            self.fleet.report_foreign(subject, sseq, why)

    def _decision(self, line: bytes, node: str) -> Decision:
        try:
            d = decision_from_dict(orjson.loads(line), line)
        except ValueError as exc:  # the cache file was edited or damaged
            raise CorruptLine(str(self.path), 0, f"not a record ({exc})") from exc
        return d if d.node is not None else d._replace(node=node)

    def lines(
        self, flt: Filter, *, limit: int | None = None, newest_first: bool = False
    ) -> Iterator[tuple[bytes, str]]:
        """(stored line, node) of the records ``flt`` matches, in time order (or newest
        first), at most ``limit``; streamed from the cache."""
        self.catch_up()
        self._report_foreign(flt)
        exact = is_exact(flt)
        where, args = where_sql(flt, probe=limit is not None)
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT line, node FROM records r WHERE {where} ORDER BY r.ts {order}, r.seq {order}"
        if limit is not None and exact:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            cursor = self._conn().execute(sql, args)
            rows = cursor.fetchmany(4096)
        n = 0
        while rows:
            for line, node in rows:
                if not exact and not Filter.matches(flt, self._decision(line, node)):
                    continue
                yield line, node
                n += 1
                if limit is not None and n >= limit:
                    return
            with self._lock:
                rows = cursor.fetchmany(4096)

    def query(
        self, flt: Filter, *, limit: int | None = None, newest_first: bool = False
    ) -> list[Decision]:
        """The decisions ``flt`` matches, in time order (or newest first), at most ``limit``."""
        return [
            self._decision(line, node)
            for line, node in self.lines(flt, limit=limit, newest_first=newest_first)
        ]

    def stats(self, flt: Filter) -> Stats:
        """Approval rate per action, vetoes per voter, per day and per node (counted as
        ``fleet_stats.py`` says)."""
        if not is_exact(flt):  # subject values that are not text: decide each record exactly
            return Stats.of(self.query(flt))
        self.catch_up()
        self._report_foreign(flt)
        with self._lock:
            return count_stats(self._conn(), flt)
