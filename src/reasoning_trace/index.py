"""The derived id/seq index of a file store (``<root>/.rtrace/index.sqlite``).

It maps each record's ``seq`` and ``id`` to its place (day file, byte offset, length), so that
``get`` and the uniqueness check of caller-given ids never scan the log. It is derived: it is
caught up lazily from the day files (reading only what was appended since the last catch-up),
every hit is checked against the line it points to, and any disagreement — a deleted index, a
rolled-back write it had seen, an edited day file — makes it rebuild itself from the day files.
SQLite (standard library) gives crash-safe multi-process updates for free; it is opened with
``synchronous=OFF`` because losing it loses nothing.

A first build over many day files parses them in worker processes (``index_build``), loads the
rows with the secondary indexes dropped and made again at the end, and leaves the subjects to
the first query on a subject; all of it is one transaction, so a process killed while it builds
leaves no half-built index behind. The per-day-file aggregates ``stats`` reads are kept as it
catches up (``index_stats``).

Longer than 400 lines because the catch-up, its checks against the day files and the queries
that rely on them share one connection, lock and set of invariants.
Tests: ``tests/test_index.py``, ``tests/test_index_build.py``.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .errors import CorruptLine, StorageError
from .head import day_of
from .index_build import PARALLEL_DAYS, DayRows, DayTally, parse_day, parse_days, subjects_of
from .index_sql import (
    MAX_SEQ,
    SCHEMA,
    SCHEMA_VERSION,
    SECONDARY,
    TABLES,
    DerivedDatabase,
    is_exact,
    stats_sql,
    subject_text,
    where_sql,
)
from .index_stats import AGG_SCHEMA, AGG_TABLES, Aggregates, answerable, size_and_stamp
from .layout import is_day
from .legacy import is_legacy_line, read_line
from .record import Decision, decision_from_dict

if TYPE_CHECKING:
    from .day_files import DayFiles
    from .query import Filter

from .query import EVERY, Page, Stats

__all__ = ["Index"]


#: The page cache of a first build, KiB as SQLite's negative ``cache_size`` (1 GiB at most: a
#: year of three thousand decisions a day is some 300 MB of pages).
BUILD_CACHE_KIB = -1_048_576


def _subject_rows(d: Decision) -> Iterator[tuple[str, str, int]]:
    """The ``subjects`` rows of a decision: its scalar subject values, as text."""
    for key, value in d.subject.items():
        if isinstance(value, str | int | float | bool) or value is None:
            yield key, subject_text(value), d.seq


def _rollback(db: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        db.execute("ROLLBACK")


class _Stale(Exception):
    """The index disagrees with the day files and must be rebuilt (``args[0]``: why)."""


class Index:
    """seq/id → (day, offset, length), derived from a log's day files (``files``), kept in
    the SQLite file at ``path``."""

    def __init__(self, files: DayFiles, path: Path) -> None:
        self._files = files
        self._path = path
        self._derived = DerivedDatabase(
            path, SCHEMA + AGG_SCHEMA, SCHEMA_VERSION, (*TABLES, *AGG_TABLES)
        )
        self._aggregates = Aggregates(path)
        self._lock = self._derived.lock
        self._conn = self._derived.conn

    def close(self) -> None:
        """Close the database connection."""
        self._derived.close()

    # --- catching up -------------------------------------------------------------------------

    def _current(self) -> bool:
        """Whether the index already reaches the end of the newest day file (read-only: no
        write transaction, so concurrent queries do not queue behind each other)."""
        meta = dict(self._conn().execute("SELECT k, v FROM meta").fetchall())
        days = self._files.days()
        if not days:
            return int(meta.get("next_seq", 0)) == 0
        if meta.get("day") != days[-1]:
            return False
        try:
            size = os.stat(self._files.layout.day_file_s(days[-1])).st_size
            return size == int(meta.get("offset", -1)) and self._end_intact(self._conn(), meta)
        except FileNotFoundError:
            return False

    def _end_intact(self, db: sqlite3.Connection, meta: dict[str, Any]) -> bool:
        """Whether the last record indexed is still where it was (a write the index saw that
        was then rolled back, or an edit of the day file, replaces or moves it), and ends
        where the index says it stopped reading (rows and counters edited together to leave
        records out would otherwise look whole)."""
        last = int(meta.get("next_seq", 0)) - 1
        sql = "SELECT day, offset, length, id FROM records WHERE seq=?"
        row = db.execute(sql, (last,)).fetchone()
        if row is None:
            return True  # none yet, or the original module's line that is not a record
        found = self._read_at(row[0], row[1], row[2], last)
        ends = (row[0], row[1] + row[2] + 1) == (meta.get("day"), int(meta.get("offset", -1)))
        return ends and found is not None and (found.seq, found.id) == (last, row[3])

    def catch_up(self, upto: int | None = None) -> None:
        """Index every complete record appended since the last catch-up (or up to ``upto``)."""
        with self._lock:
            try:
                if upto is None and self._current():
                    return
                self._catch_up_locked(upto)
            except _Stale:
                self._rebuild_locked()
            except sqlite3.Error as exc:
                raise StorageError(f"could not update the index {self._path}: {exc}") from exc

    def _catch_up_locked(self, upto: int | None, afresh: bool = False) -> None:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            if afresh:
                for table in (*TABLES, *AGG_TABLES):
                    db.execute(f"DELETE FROM {table}")
            meta = dict(db.execute("SELECT k, v FROM meta").fetchall())
            next_seq = int(meta.get("next_seq", 0))
            if not self._end_intact(db, meta):
                raise _Stale("the last record indexed is no longer where the index has it")
            if upto is not None and next_seq >= upto:
                db.execute("COMMIT")
                return
            day0, off0 = meta.get("day"), int(meta.get("offset", 0))
            layout = self._files.layout
            jobs: list[tuple[str, str, int]] = []
            befores: dict[str, tuple[int, str]] = {}  # (size, stamp) before any line is read
            for day in self._files.days():
                if day0 is not None and day < day0:
                    continue
                start = off0 if day == day0 else 0
                if day == day0 and layout.day_file(day).stat().st_size < start:
                    raise _Stale
                path = layout.day_file_s(day)
                befores[path] = size_and_stamp(path)
                jobs.append((path, day, start))
            # Subjects are indexed along when they are current; a first build over many day
            # files leaves them to the first query on a subject (``_subjects_current``).
            subjects = int(meta.get("subjects", 0)) == next_seq
            bulk = next_seq == 0 and len(jobs) >= PARALLEL_DAYS
            if bulk and not self._files.legacy_prefix().leaves:
                subjects = False
                for name in SECONDARY:
                    db.execute(f"DROP INDEX IF EXISTS {name}")
                db.execute(f"PRAGMA cache_size = {BUILD_CACHE_KIB}")  # no spill to the WAL
                try:
                    self._load(db, jobs, parse_days(jobs), befores, next_seq, subjects, meta)
                    for sql in SECONDARY.values():  # (executescript would commit first)
                        db.execute(sql)
                finally:
                    db.execute("PRAGMA cache_size = -2000")  # SQLite's default
            else:
                self._load(db, jobs, itertools.repeat(None), befores, next_seq, subjects, meta)
            db.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            _rollback(db)
            raise _Stale(f"an id appears twice ({exc})") from exc
        except BaseException:
            _rollback(db)  # SQLite may have rolled back already (a full disk): keep the cause
            raise

    def _load(
        self,
        db: sqlite3.Connection,
        jobs: list[tuple[str, str, int]],
        parsed: Iterator[DayRows | None],
        befores: dict[str, tuple[int, str]],
        next_seq: int,
        subjects: bool,
        meta: dict[str, Any],
    ) -> None:
        """Insert the rows of each day file ``(path, day, start)`` of ``jobs`` (``parsed``:
        its fast parse, or ``None`` for the careful path), its aggregates (``befores``: each
        file's size and stamp before it was read), and the new meta."""
        end_day, end_off = meta.get("day"), int(meta.get("offset", 0))
        for job, fast in zip(jobs, parsed, strict=False):
            if fast is not None and fast.records and fast.records[0][0] != next_seq:
                fast = None  # seqs do not follow on: the careful path says where
            if fast is None:
                fast = self._careful(db, *job, next_seq, subjects)
            db.executemany("INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?)", fast.records)
            db.executemany("INSERT INTO vetoes VALUES (?,?)", fast.vetoes)
            if fast.tally.counts:
                before = befores[job[0]]
                self._aggregates.add(db, fast.day, fast.tally, fast.end, job[0], before)
            if fast.end > fast.start:
                end_day, end_off = fast.day, fast.end
            next_seq = fast.next_seq if fast.next_seq is not None else next_seq
        new_meta = [("next_seq", next_seq), ("day", end_day), ("offset", end_off)]
        if subjects:
            new_meta.append(("subjects", next_seq))
        db.executemany("INSERT OR REPLACE INTO meta VALUES (?,?)", new_meta)

    def _careful(
        self, db: sqlite3.Connection, path: str, day: str, start: int, next_seq: int, subjects: bool
    ) -> DayRows:
        """One day file's rows through the record parser (legacy lines, damage reported);
        its subjects inserted too when ``subjects``."""
        out = DayRows(day, start, start, [], [], DayTally(), next_seq)
        subject_rows: list[tuple[str, str, int]] = []
        prefix = self._files.legacy_prefix()
        for offset, _lineno, line in self._files.lines(day, start):
            try:
                if prefix.covers(day, offset):
                    d = read_line(line, next_seq)
                else:
                    d = decision_from_dict(orjson.loads(line), line)
            except ValueError as exc:
                if prefix.covers(day, offset):
                    next_seq += 1  # a legacy line that does not parse: a leaf all the same
                    out.end = offset + len(line) + 1
                    continue
                if is_legacy_line(line):
                    continue  # the original module's line after adoption: not a record
                raise CorruptLine(path, offset, f"not a record ({exc})") from exc
            seq = d.seq
            if seq != next_seq:
                raise _Stale(f"{path} at byte {offset}: seq {seq}, {next_seq} was due")
            ts = round(d.timestamp * 1_000_000)
            approved = int(d.approved)
            out.records.append((seq, d.id, day, offset, len(line), ts, d.action, approved, d.node))
            against = d.against
            out.vetoes.extend((voter, seq) for voter in against)
            out.tally.add(d.day, d.action, approved, d.node or "", ts, against)
            if subjects:
                subject_rows.extend(_subject_rows(d))
            next_seq += 1
            out.end = offset + len(line) + 1
        out.next_seq = next_seq
        db.executemany("INSERT INTO subjects VALUES (?,?,?)", subject_rows)
        return out

    def _rebuild_locked(self) -> None:
        """Index the day files afresh. The old rows go in the same transaction as the new
        ones come (the whole build is one transaction): a process killed while it builds
        leaves the index as it was before, which the next catch-up finds stale again."""
        try:
            self._catch_up_locked(None, afresh=True)
        except _Stale as exc:
            # Even from scratch the day files do not hold one record per seq in order.
            raise StorageError(
                f"cannot index {self._files.root}: {exc.args[0] if exc.args else exc} "
                "(run `rtrace verify` to locate the damage)"
            ) from exc

    # --- lookups -----------------------------------------------------------------------------

    def locate(self, seq: int) -> tuple[str, int, int] | None:
        """(day, offset, length) of record ``seq``, or ``None``."""
        self.catch_up(seq + 1)
        with self._lock:
            row = (
                self._conn()
                .execute("SELECT day, offset, length FROM records WHERE seq=?", (seq,))
                .fetchone()
            )
        return None if row is None else (row[0], row[1], row[2])

    def _fetch(self, where: str, key: int | str) -> Decision | None:
        for attempt in range(2):
            with self._lock:
                row = (
                    self._conn()
                    .execute(
                        f"SELECT day, offset, length, seq FROM records WHERE {where}=?", (key,)
                    )
                    .fetchone()
                )
            if row is None:
                return None
            decision = self._read_at(*row)
            if decision is not None and (
                decision.seq == key if where == "seq" else decision.id == key
            ):
                return decision
            if attempt == 0:
                with self._lock:
                    self._rebuild_locked()
        return None

    def _read_at(self, day: str, offset: int, length: int, seq: int) -> Decision | None:
        if not isinstance(day, str) or not is_day(day):
            return None  # a row naming no day file of this log: the index is not trusted
        path = self._files.layout.day_file(day)
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                line = fh.read(length + 1)
        except FileNotFoundError:
            return None
        if len(line) != length + 1 or not line.endswith(b"\n"):
            return None
        try:
            return read_line(line[:-1], seq)
        except ValueError:
            return None

    # --- queries -----------------------------------------------------------------------------

    def _where(self, flt: Filter, probe: bool = False) -> tuple[str, list[object]]:
        return where_sql(flt, probe)

    def _check_count(self) -> None:
        """``_Stale`` when the index holds another number of rows than the records it says it
        indexed, or a row outside them (a row deleted or added behind its back). All of it is
        read at one instant: the log's head moves on while a writer writes."""
        sql = (
            "SELECT (SELECT COUNT(*) FROM records), (SELECT MIN(seq) FROM records), "
            "(SELECT MAX(seq) FROM records), (SELECT v FROM meta WHERE k = 'next_seq')"
        )
        with self._lock:
            have, low, high, indexed = self._conn().execute(sql).fetchone()
        expected = int(indexed or 0) - len(self._files.legacy_prefix().unparseable)
        if have != expected:
            raise _Stale(f"the index holds {have} records, the day files {expected}")
        if have and not 0 <= low <= high < int(indexed):
            raise _Stale(f"the index holds seqs {low}..{high}, it indexed {indexed} records")

    def _rows(self, flt: Filter, page: Page) -> list[tuple[str, int, int, int]]:
        self.catch_up()
        if flt.subject:
            self._subjects_current()
        where, args = self._where(flt, probe=page.limit is not None)
        if page.before_seq is not None:
            where += " AND r.seq < ?"
            args.append(min(page.before_seq, MAX_SEQ))
        order = "DESC" if page.newest_first else "ASC"
        sql = f"SELECT day, offset, length, seq FROM records r WHERE {where} ORDER BY r.seq {order}"
        if page.limit is not None and is_exact(flt):
            sql += f" LIMIT {int(page.limit)}"
        with self._lock:
            return self._conn().execute(sql, args).fetchall()

    def _read(self, rows: list[tuple[str, int, int, int]]) -> Iterator[tuple[str, int, bytes, int]]:
        """(day file path, offset, line, seq) for each row, one open file per day."""
        handles: dict[str, int] = {}
        try:
            for day, offset, length, seq in rows:
                if not isinstance(day, str) or not is_day(day):
                    raise _Stale(f"a row names {day!r}, not a day file of this log")
                fd = handles.get(day)
                if fd is None:
                    fd = handles[day] = os.open(self._files.layout.day_file_s(day), os.O_RDONLY)
                # A whole line only: a newline before it (or the file's start) and after it.
                start = max(offset - 1, 0)
                data = os.pread(fd, length + 1 + (offset - start), start)
                if (offset and data[:1] != b"\n") or data[-1:] != b"\n":
                    raise _Stale(f"seq {seq}: the row does not point at a whole line")
                line = data[offset - start : -1]
                if len(line) != length:
                    raise _Stale(f"seq {seq}: the row's length does not match the line")
                yield self._files.layout.day_file_s(day), offset, line, seq
        finally:
            for fd in handles.values():
                os.close(fd)

    def select(self, flt: Filter, page: Page = EVERY) -> list[Decision]:
        """The decisions a filter matches (the ``page`` of them), found through the index and
        checked exactly against the day files."""
        for attempt in range(2):
            try:
                return self._select(flt, page)
            except _Stale:
                if attempt:
                    raise StorageError(
                        f"the index of {self._files.root} disagrees with its day files even "
                        "rebuilt (run `rtrace verify`)"
                    ) from None
                with self._lock:
                    self._rebuild_locked()
        raise AssertionError("unreachable")

    def _select(self, flt: Filter, page: Page) -> list[Decision]:
        """``select`` once; ``_Stale`` when a row does not lead to the record it names (only
        bytes read from this log's own day files, at the place the seq says, are returned)."""
        out: list[Decision] = []
        rows = self._rows(flt, page)
        limit = page.limit
        self._check_count()
        prefix = self._files.legacy_prefix()
        for path, offset, line, seq in self._read(rows):
            if limit is not None and limit <= 0:
                break  # a limit of 0 (the SQL LIMIT decides only exact filters)
            if seq < prefix.leaves and prefix.place(seq) != (os.path.basename(path)[:10], offset):
                raise _Stale(f"seq {seq}: not the place of the original module's line {seq}")
            try:
                d = read_line(line, seq)
            except ValueError as exc:  # the index is stale or the file was edited
                raise _Stale(f"seq {seq}: not a record there ({exc})") from exc
            if d.seq != seq:
                raise _Stale(f"seq {seq}: the line there is seq {d.seq}")
            if flt.matches(d):  # the row's columns are never trusted for content
                out.append(d)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def select_lines(self, flt: Filter, page: Page = EVERY) -> list[bytes] | None:
        """The stored lines a filter matches, unparsed, when SQL decides it exactly (else
        ``None``): what ``rtrace query --format json`` prints."""
        if not is_exact(flt):
            return None
        return [d.line for d in self.select(flt, page)]

    def stats(self, flt: Filter) -> dict[str, list[tuple[Any, ...]]]:
        """Aggregates over the decisions a filter matches, computed by the index."""
        self.catch_up()
        if flt.subject:
            self._subjects_current()
        where, args = self._where(flt)
        queries = stats_sql(where)
        with self._lock:
            db = self._conn()
            return {name: db.execute(sql, args).fetchall() for name, sql in queries.items()}

    def exact_stats(self, flt: Filter) -> Stats | None:
        """The stats of the records ``flt`` matches, as a full read counts them, from the
        aggregates where they are believed (``index_stats``) and the records of the other day
        files; ``None`` for a filter the aggregates cannot answer (voters, subjects)."""
        if not answerable(flt):
            return None
        self.catch_up()
        lo = day_of(flt.since_us) if flt.since_us is not None else None
        hi = day_of(flt.until_us - 1) if flt.until_us is not None else None
        layout = self._files.layout
        days = [
            (day, layout.day_file_s(day))
            for day in self._files.days()
            if (lo is None or day >= lo) and (hi is None or day <= hi)
        ]
        with self._lock:
            plan = self._aggregates.plan(self._conn(), flt, days)
        for day in plan.scan:
            for d in self._files.decisions(day):
                if flt.matches(d):
                    plan.tally.add(d)
        if plan.refused:
            self._recount(plan.refused)
        return plan.tally.stats()

    def _recount(self, days: list[str]) -> None:
        """Count the day files whose aggregates were not believed afresh from their lines (up
        to where the index has read), so that the next ``stats`` can use them: after a day
        file was touched, its counts edited, or the key lost."""
        with self._lock:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    meta = dict(db.execute("SELECT k, v FROM meta").fetchall())
                    last, offset = meta.get("day"), int(meta.get("offset", 0))
                    for day in days:
                        if last is None or day > last:
                            continue  # not indexed yet
                        path = self._files.layout.day_file_s(day)
                        before = size_and_stamp(path)
                        rows = parse_day(path, day, 0, offset if day == last else None)
                        if rows is not None:  # (else counted from its records each time)
                            tally, end = rows.tally, rows.end
                            self._aggregates.replace(db, day, tally, end, path, before)
                    db.execute("COMMIT")
                except BaseException:
                    _rollback(db)
                    raise
            except (sqlite3.Error, OSError) as exc:
                raise StorageError(f"could not update the index {self._path}: {exc}") from exc

    def _subjects_current(self) -> None:
        """Index the subjects of the records indexed without them (a first build leaves them
        to the first query that needs them), reading each record at its place."""
        with self._lock:
            db = self._conn()
            meta = dict(db.execute("SELECT k, v FROM meta").fetchall())
            done, indexed = int(meta.get("subjects", 0)), int(meta.get("next_seq", 0))
            if done >= indexed:
                return
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    self._add_subjects(db)
                    db.execute("COMMIT")
                except BaseException:
                    _rollback(db)
                    raise
            except _Stale:
                self._rebuild_locked()
            except sqlite3.Error as exc:
                raise StorageError(f"could not update the index {self._path}: {exc}") from exc

    def _add_subjects(self, db: sqlite3.Connection) -> None:
        """``_subjects_current`` inside its transaction (``_Stale``: a record is not where
        its row says)."""
        meta = dict(db.execute("SELECT k, v FROM meta").fetchall())
        done = int(meta.get("subjects", 0))
        indexed = int(meta.get("next_seq", 0))
        if done >= indexed:
            return
        many = indexed - done > 100_000
        if many:
            db.execute("DROP INDEX IF EXISTS subjects_kv")
        if done == 0 and not self._files.legacy_prefix().leaves:
            done = self._subjects_from_files(db, indexed)
        rows = db.execute(
            "SELECT day, offset, length, seq FROM records WHERE seq >= ? AND seq < ? ORDER BY seq",
            (done, indexed),
        ).fetchall()
        batch: list[tuple[str, str, int]] = []
        loads = orjson.loads
        for _path, _offset, line, seq in self._read(rows):
            try:
                r = loads(line)
                subject = r["subject"]
                if r["seq"] != seq or type(subject) is not dict:
                    raise ValueError("not the record its row names")
                batch.extend(
                    (key, value if type(value) is str else subject_text(value), seq)
                    for key, value in subject.items()
                    if isinstance(value, str | int | float | bool) or value is None
                )
            except (ValueError, KeyError, TypeError) as exc:
                try:  # a legacy record, or not a record: the record parser decides
                    batch.extend(_subject_rows(read_line(line, seq)))
                except ValueError:
                    raise _Stale(f"seq {seq}: not a record there") from exc
            if len(batch) >= 200_000:
                db.executemany("INSERT INTO subjects VALUES (?,?,?)", batch)
                batch.clear()
        db.executemany("INSERT INTO subjects VALUES (?,?,?)", batch)
        if many:
            db.execute(SECONDARY["subjects_kv"])
        db.execute("INSERT OR REPLACE INTO meta VALUES ('subjects', ?)", (indexed,))

    def _subjects_from_files(self, db: sqlite3.Connection, indexed: int) -> int:
        """Subjects of seqs below ``indexed`` read straight from the day files (parsed by
        workers, as a first build is), in order, up to the first day file with a line that is
        not a plain record; the seq from which the rows must be read one by one instead."""
        layout = self._files.layout
        jobs = [(layout.day_file_s(day), 0) for day in self._files.days()]
        done = 0
        for cols in subjects_of(jobs):
            if cols is None or done >= indexed:
                break
            keys, values, seqs, first, last = cols
            if first < 0:
                continue  # no record in that file
            if first != done:
                break  # not where the index has it: the rows say
            if last >= indexed:
                cut = bisect.bisect_left(seqs, indexed)
                keys, values, seqs = keys[:cut], values[:cut], seqs[:cut]
            db.executemany(
                "INSERT INTO subjects VALUES (?,?,?)", zip(keys, values, seqs, strict=True)
            )
            done = min(last + 1, indexed)
        return done

    def find_seq(self, seq: int) -> Decision | None:
        """The decision with this seq, or ``None``."""
        if not 0 <= seq <= MAX_SEQ:  # SQLite integers are 64-bit; no log reaches this far
            return None
        self.catch_up(seq + 1)
        return self._fetch("seq", seq)

    def find_id(self, decision_id: str, upto: int | None = None) -> Decision | None:
        """The decision with this id, or ``None``; indexes everything up to ``upto`` first."""
        self.catch_up(upto)
        return self._fetch("id", decision_id)
