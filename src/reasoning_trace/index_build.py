"""Reading day files into index rows, fast: the parse of ``Index`` catch-ups, run in worker
processes when a catch-up reads many day files (a first build over a year), as ``verify`` does.

A day file's lines become ``records`` rows ``(seq, id, day, offset, length, ts, action,
approved, node)``, ``vetoes`` rows ``(voter, seq)`` and the day file's aggregates (``DayTally``:
decisions per record day, action, verdict and node, and vetoes per voter of each), which
``index_stats`` keeps for ``stats``. The lines are only taken apart, not validated as a record
(``verify`` does that): a line this fast path cannot take apart (another shape, a legacy line, a
torn record) makes it give the day file back to the careful path of ``Index``, which reads it
with the record parser and reports what is wrong.
Tests: ``tests/test_index_build.py``.
"""

from __future__ import annotations

import gc
import itertools
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from .workers import worker_pool

__all__ = [
    "PARALLEL_DAYS",
    "DayRows",
    "DayTally",
    "RecordRow",
    "SubjectColumns",
    "parse_day",
    "parse_days",
    "parse_subjects",
    "subjects_of",
]

#: Day files from which a catch-up parses in worker processes (fewer: in this process).
PARALLEL_DAYS = 8

#: (seq, id, day, offset, length, ts in µs, action, approved 0/1, node or None)
RecordRow = tuple[int, str, str, int, int, int, str, int, str | None]


@dataclass
class DayTally:
    """Aggregates of the records of one day file: ``counts[(record day, action, approved,
    node)]`` decisions, ``vetoes[(record day, action, approved, node, voter)]`` votes against,
    ``lo``/``hi`` the least and greatest timestamp (µs; ``None`` with no record). A record
    without a node counts under node ``""``, as ``Stats`` shows it."""

    counts: dict[tuple[str, str, int, str], int] = field(default_factory=dict)
    vetoes: dict[tuple[str, str, int, str, str], int] = field(default_factory=dict)
    lo: int | None = None
    hi: int | None = None

    def add(
        self, rday: str, action: str, approved: int, node: str, ts: int, against: Iterable[str]
    ) -> None:
        """Count one record (its day ``YYYY-MM-DD``, time ``ts`` in µs, voters against)."""
        key = (rday, action, approved, node)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        for voter in against:
            vkey = (*key, voter)
            self.vetoes[vkey] = self.vetoes.get(vkey, 0) + 1
        if self.lo is None or ts < self.lo:
            self.lo = ts
        if self.hi is None or ts > self.hi:
            self.hi = ts


@dataclass
class DayRows:
    """What ``parse_day`` makes of a day file from byte ``start``: rows, the tally, and
    ``end``, the byte after the last record read (``start`` when none was)."""

    day: str
    start: int
    end: int
    records: list[RecordRow]
    vetoes: list[tuple[str, int]]
    tally: DayTally
    next_seq: int | None = None  # the seq after the last record read (None: none read)


def parse_day(path: str, day: str, start: int, stop: int | None = None) -> DayRows | None:
    """Take apart the complete lines of one day file from byte ``start`` (to byte ``stop``);
    ``None`` when a line is not a record of the plain shape or seqs do not follow each other
    (the careful path then reads that file). Raises ``OSError`` when the file cannot be
    read."""
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read() if stop is None else fh.read(max(stop - start, 0))
    except FileNotFoundError:
        return DayRows(day, start, start, [], [], DayTally())
    end = data.rfind(b"\n") + 1
    records: list[RecordRow] = []
    vetoes: list[tuple[str, int]] = []
    tally = DayTally()
    loads, add, veto = orjson.loads, records.append, vetoes.append
    offset = start
    expect = -1
    try:
        for line in data[:end].split(b"\n")[:-1]:
            if not line:
                offset += 1
                continue
            r = loads(line)
            seq, ident, action, approved = r["seq"], r["id"], r["action"], r["approved"]
            node, votes = r.get("node"), r["votes"]
            ts = round(r["timestamp"] * 1_000_000)
            rday = r["datetime_utc"][:10]
            if (
                type(seq) is not int
                or (expect >= 0 and seq != expect)
                or type(ident) is not str
                or type(action) is not str
                or type(approved) is not bool
                or type(rday) is not str
                or not (node is None or type(node) is str)
                or type(votes) is not dict
                or type(r["subject"]) is not dict
            ):
                return None
            against = [
                voter
                for voter, vote in votes.items()
                if type(vote) is dict and vote.get("passed") is False
            ]
            length = len(line)
            add((seq, ident, day, offset, length, ts, action, int(approved), node))
            for voter in against:
                veto((voter, seq))
            tally.add(rday, action, int(approved), node or "", ts, against)
            offset += length + 1
            expect = seq + 1
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
        return None  # not a plain record: the careful path says what it is
    last = records[-1][3] + records[-1][4] + 1 if records else start  # blank lines: not read
    return DayRows(day, start, last, records, vetoes, tally, expect if records else None)


#: ``DayRows`` as a worker sends it: its rows as columns, without the day's (fewer objects
#: to pickle and unpickle, and this process's share of a build is the larger one).
_Packed = tuple[str, int, int, list[tuple[Any, ...]], list[tuple[Any, ...]], DayTally, int | None]


def _parse_quietly(path: str, day: str, start: int) -> _Packed | None:
    """``parse_day`` in a worker, packed: millions of rows are made and none is garbage."""
    gc.disable()
    rows = parse_day(path, day, start)
    if rows is None:
        return None
    columns = list(zip(*rows.records, strict=True))
    if columns:
        del columns[2]  # the day, the same in each row
    vetoes = list(zip(*rows.vetoes, strict=True))
    return rows.day, rows.start, rows.end, columns, vetoes, rows.tally, rows.next_seq


def _unpack(packed: _Packed | None) -> DayRows | None:
    """The ``DayRows`` a worker sent."""
    if packed is None:
        return None
    day, start, end, columns, vetoes, tally, next_seq = packed
    records: list[RecordRow] = (
        list(zip(columns[0], columns[1], itertools.repeat(day), *columns[2:], strict=False))
        if columns
        else []
    )
    pairs: list[tuple[str, int]] = list(zip(*vetoes, strict=True)) if vetoes else []
    return DayRows(day, start, end, records, pairs, tally, next_seq)


#: ``subjects`` rows of a day file as columns (keys, values as text, seqs), and the seqs of its
#: first and last records (-1, -1: none).
SubjectColumns = tuple[list[str], list[str], list[int], int, int]


def parse_subjects(path: str, start: int) -> SubjectColumns | None:
    """The ``subjects`` rows of the complete lines of one day file from byte ``start`` (scalar
    values only, as text: ``subject_text``); ``None`` when a line is not a plain record."""
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read()
    except FileNotFoundError:
        return [], [], [], -1, -1
    keys: list[str] = []
    values: list[str] = []
    seqs: list[int] = []
    loads, dumps = orjson.loads, orjson.dumps
    first = last = -1
    try:
        for line in data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]:
            if not line:
                continue
            r = loads(line)
            seq, subject = r["seq"], r["subject"]
            if type(seq) is not int or type(subject) is not dict or (last >= 0 and seq != last + 1):
                return None
            first = seq if first < 0 else first
            last = seq
            for key, value in subject.items():
                if type(value) is str:
                    text = value
                elif value is None or isinstance(value, int | float | bool):
                    text = dumps(value).decode()
                else:
                    continue
                keys.append(key)
                values.append(text)
                seqs.append(seq)
    except (ValueError, KeyError, TypeError):
        return None
    return keys, values, seqs, first, last


def _subjects_quietly(path: str, start: int) -> SubjectColumns | None:
    """``parse_subjects`` in a worker."""
    gc.disable()
    return parse_subjects(path, start)


def subjects_of(jobs: list[tuple[str, int]]) -> Iterator[SubjectColumns | None]:
    """``parse_subjects`` of each ``(path, start)`` in order, in workers as ``parse_days``."""
    pool = _pool(len(jobs))
    if pool is None:
        for path, start in jobs:
            yield parse_subjects(path, start)
        return
    with pool:
        paths, starts = zip(*jobs, strict=True)
        yield from pool.map(_subjects_quietly, paths, starts, chunksize=4)


def _pool(jobs: int) -> ProcessPoolExecutor | None:
    """Forked workers for ``jobs`` day files, or ``None`` where this process should parse
    them itself (see ``parse_days``)."""
    workers = min(4, os.cpu_count() or 1)
    if jobs < PARALLEL_DAYS or workers < 2:
        return None
    return worker_pool(workers, spawn=False)


def parse_days(jobs: list[tuple[str, str, int]]) -> Iterator[DayRows | None]:
    """``parse_day`` of each ``(path, day, start)`` in order: in worker processes when there
    are ``PARALLEL_DAYS`` or more, more than one CPU and this process runs one thread only,
    else in this one.

    The workers are forked, which is safe with one thread and imports nothing again (a spawned
    worker imports the caller's main module: a script without a ``__main__`` guard would run
    again in each worker)."""
    pool = _pool(len(jobs))
    if pool is None:
        for path, day, start in jobs:
            yield parse_day(path, day, start)
        return
    with pool:
        paths, days, starts = zip(*jobs, strict=True)
        for packed in pool.map(_parse_quietly, paths, days, starts, chunksize=4):
            yield _unpack(packed)
