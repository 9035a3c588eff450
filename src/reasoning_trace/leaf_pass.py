"""The fast first pass of ``verify`` (SPEC section 4, "Verify"; RFC 9162 section 2.1.1).

Every line of the day files, in order, is hashed as a leaf, ``SHA-256(0x00 || line)``, and
folded into the tree's right edge, ``SHA-256(0x01 || left || right)``; at each size the caller
asks for, the root is kept. The day files are cut into line-aligned chunks of ``CHUNK_BYTES``;
the leaves and the timestamp checks of a chunk are computed in one call, in worker processes
for logs of ``PARALLEL_BYTES`` or more. This process folds each chunk's leaves as it arrives,
while later chunks are hashed: a level at a time (``tree.extend_range``: one node per pair of the
level below, then only the O(log n) subtrees at the chunk's edges merged into the tree's edge),
and when the next chunk is not back yet it hashes, itself, the last chunk no worker has started.
Memory is the tree's edge, O(log n) hashes, and a bounded window of chunks.

Found on the way, as findings: a record's timestamp of another day than its file's
(``wrong_day``) or earlier than the record before (``clock_backwards``), bytes after a file's
last newline (``torn_tail``), and the original module's lines written after this log's records
(``foreign_line``; not leaves). Where the leaves do not match, ``locate`` reads again.

A pass may start part-way (``resume``): from a ``Resume`` point, the tree's edge and the place
of the next leaf, which a pass keeps at the largest size it was asked for (``resume_at``).
``verify_incremental`` carries a verified log on from there, reading only what is new. A
resumed pass does not compare its first record's time with the one before the resume point.
Tests: ``tests/test_verify.py`` (one process, workers and small chunks report alike),
``tests/test_verify_overlap.py`` (every root of odd-sized files and chunks, a tampered line
found at its line), ``tests/test_legacy.py``, ``tests/test_faults.py``.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from operator import le
from pathlib import Path

from .legacy import Prefix, is_legacy_line
from .report import Finding, Report
from .tree import CompactRange, extend_range
from .workers import worker_pool

__all__ = ["CHUNK_BYTES", "PARALLEL_BYTES", "LeafPass", "Resume", "hash_pass"]

#: A chunk: the lines that start in this many bytes of a day file, hashed in one call.
CHUNK_BYTES = 16 << 20
#: Logs this big or bigger are hashed in worker processes; smaller ones in this process.
PARALLEL_BYTES = 64 << 20
_DT = b'"datetime_utc":"'


@dataclass(frozen=True)
class Resume:
    """Where a pass over the leaves can carry on: after ``size`` leaves whose tree's edge is
    ``edge`` (the complete subtrees' roots, largest first), the next leaf starting at byte
    ``offset`` of the day file of ``day``, after ``lines`` lines of that file."""

    size: int
    edge: tuple[bytes, ...]
    day: str
    offset: int
    lines: int

    def root(self) -> bytes:
        """The root of the tree of ``size`` leaves (RFC 9162 section 2.1.1)."""
        if not self.edge:
            return hashlib.sha256(b"").digest()
        root = self.edge[-1]
        for left in reversed(self.edge[:-1]):
            root = hashlib.sha256(b"\x01" + left + root).digest()
        return root


@dataclass
class LeafPass:
    """What the pass over every leaf found, besides its findings."""

    records: int  # leaves: the records, and the original module's lines that are leaves
    nbytes: int  # bytes read
    roots: dict[int, bytes]  # the tree's root at each size asked for that the log reaches
    #: size -> (day file index, byte offset) where that leaf starts: for 0, each size asked for
    #: that the log reaches, the first leaf of each day file, and the end
    places: dict[int, tuple[int, int]]
    #: where a pass could carry on from the largest size asked for that the log reaches
    resume_at: Resume | None = None
    last_dt: bytes = b""  # the last record's datetime_utc, as stored


def hash_pass(
    days: list[Path],
    sizes: Iterable[int],
    prefix: Prefix,
    report: Report,
    *,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    resume: Resume | None = None,
) -> LeafPass:
    """Fold every leaf of ``days`` (the day files, in order) into the tree's edge and keep the
    root at each of ``sizes``; what it finds on the way goes to ``report``.

    ``prefix``: the original module's lines at the log's start (its blank lines are not
    leaves, nor its lines after this log's records). ``progress(done_bytes, total_bytes)`` is
    called after each chunk. ``workers``: processes hashing leaves, this one included (default:
    up to 4 for logs of ``PARALLEL_BYTES`` or more, else 1). Leaf hashing and the timestamp
    checks happen in ``_hash_chunk`` (also in worker processes for big logs); this loop folds
    each chunk's leaves.
    ``resume``: carry on from there (``days`` then starts with its day file) rather than
    from the first leaf; ``progress`` then counts from its offset.
    Returns the records, the bytes read, the roots at the sizes asked for, and the places.
    """
    start_at = resume.offset if resume is not None else 0
    total = sum(p.stat().st_size for p in days) - start_at
    if workers is None:
        workers = min(4, os.cpu_count() or 1) if total >= PARALLEL_BYTES else 1
    stack: list[bytes] = list(resume.edge) if resume is not None else []
    size = resume.size if resume is not None else 0
    done = 0
    targets = sorted({s for s in sizes if s > size})
    roots: dict[int, bytes] = {}
    places: dict[int, tuple[int, int]] = {size: (0, start_at)}
    resume_at = resume
    last_dt = b""
    current, file_lines = -1, 0
    for d_index, chunk in _chunks(days, workers, start_at):
        if d_index != current:
            places.setdefault(size, (d_index, 0))
            current = d_index
            file_lines = resume.lines if resume is not None and d_index == 0 else 0
        file = str(days[d_index])
        odd = chunk.odd
        if chunk.first_dt and chunk.first_dt < last_dt and not (odd and odd[0][0] == 0):
            odd = [(0, chunk.first_dt, last_dt), *odd]
        for k, dt, prev in odd:
            _report_time(
                report, file, days[d_index].stem, file_lines + k + 1, dt, prev if k else last_dt
            )
        if chunk.last_dt:
            last_dt = chunk.last_dt
        leaves = chunk.leaves
        kept: list[int] | None = None  # the chunk's lines that are leaves, when not all are
        skip = _foreign_lines(chunk, days[d_index], prefix, file_lines, report)
        if skip:  # the original module's lines after this log's records: not leaves
            kept = [k for k in range(len(leaves) // 32) if k not in skip]
            leaves = b"".join([leaves[32 * k : 32 * k + 32] for k in kept])
        end = size + len(leaves) // 32
        marks = targets[bisect_right(targets, size) : bisect_right(targets, end)]
        edges = extend_range(stack, size, leaves, marks)  # the tree's edge, a level at a time
        ends: list[int] = []  # byte offset after each line of the chunk
        for at, edge in zip(marks, edges, strict=True):
            roots[at] = CompactRange(at, edge).root()
            k = at - size if kept is None else kept[at - size - 1] + 1  # lines up to its leaf
            if not ends:
                ends = list(accumulate([n + 1 for n in array("I", chunk.lengths)], initial=0))
            places[at] = (d_index, chunk.first_offset + ends[k])
            resume_at = Resume(at, tuple(edge), days[d_index].stem, places[at][1], file_lines + k)
        size = end
        file_lines += len(chunk.leaves) // 32
        done += chunk.nbytes
        if chunk.torn:
            report.add(
                Finding(
                    "torn_tail",
                    f"{file}: {chunk.torn} bytes after the last "
                    "newline (a crash; the next writer will quarantine them)",
                    file,
                )
            )
        if progress:
            progress(done, total)
    places.setdefault(size, (len(days), 0))
    return LeafPass(size, done, roots, places, resume_at, last_dt)


@dataclass
class _Chunk:
    """What a worker found in one line-aligned chunk of a day file."""

    first_offset: int  # byte offset of the chunk's first line
    leaves: bytes  # 32-byte leaf hashes, one per line
    lengths: bytes  # array("I") of line lengths
    first_dt: bytes
    last_dt: bytes
    odd: list[tuple[int, bytes, bytes]]  # (index in chunk, timestamp, previous timestamp)
    torn: int  # bytes after the file's last newline (only in its last chunk)
    nbytes: int
    legacy: list[int] = field(default_factory=list)  # lines of the original module's shape


def _hash_chunk(path: str, start: int, end: int) -> _Chunk:
    """Leaf-hash the lines that start in [start, end) of a day file; note odd timestamps.

    A line belongs to the chunk where it starts, so chunks of one file partition its lines.
    """
    day = os.path.basename(path)[:10].encode()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        first = 0
        if start > 0:
            p, first = start - 1, size
            while block := os.pread(fd, 65536, p):
                i = block.find(b"\n")
                if i >= 0:
                    first = p + i + 1
                    break
                p += len(block)
        if first >= min(end, size):
            return _Chunk(first, b"", b"", b"", b"", [], 0, 0)
        data = os.pread(fd, end - first, first)
        while not data.endswith(b"\n") and first + len(data) < size:
            more = os.pread(fd, 65536, first + len(data))
            i = more.find(b"\n")
            data += more if i < 0 else more[: i + 1]
    finally:
        os.close(fd)
    parts = data.split(b"\n")
    torn = len(parts.pop())
    leaves: list[bytes] = []
    add = leaves.append
    leaf = hashlib.sha256(b"\x00").copy  # a copy of a started hash: no new context per line
    for line in parts:
        h = leaf()
        h.update(line)
        add(h.digest())
    legacy: list[int] = []
    if min(map(bytes.rfind, parts, repeat(b'"v":')), default=0) < 0:  # a line without "v"
        legacy = [k for k, line in enumerate(parts) if b'"v":' not in line and is_legacy_line(line)]
    dts = [line[i + 16 : i + 43] if (i := line.find(_DT)) >= 0 else b"" for line in parts]
    odd: list[tuple[int, bytes, bytes]] = []
    # In order, and the first and the last of the file's day: then every one is (a shortcut).
    if dts and not (
        len(day) == 10
        and dts[0].startswith(day)
        and dts[-1].startswith(day)
        and all(map(le, dts, dts[1:]))
    ):
        prev = b""
        for k, dt in enumerate(dts):
            if dt < prev or dt[:10] != day:  # not in order, no time, or not of the file's day
                odd.append((k, dt, prev))
            prev = dt
    first_dt, prev = (dts[0], dts[-1]) if dts else (b"", b"")
    lengths = array("I", map(len, parts)).tobytes()
    return _Chunk(first, b"".join(leaves), lengths, first_dt, prev, odd, torn, len(data), legacy)


def _chunks(days: list[Path], workers: int, skip: int = 0) -> Iterator[tuple[int, _Chunk]]:
    """(day index, chunk) in file order, hashed by ``workers`` processes (this one and
    ``workers - 1`` started for it; this one hashes a chunk whenever it would otherwise wait
    for the next); the first file from byte ``skip`` on."""
    tasks = []
    for d_index, path in enumerate(days):
        size = path.stat().st_size
        first = skip if d_index == 0 else 0
        for start in range(first, max(size, first + 1), CHUNK_BYTES):
            tasks.append((d_index, str(path), start, start + CHUNK_BYTES))
    if workers <= 1:
        for d_index, path_s, start, end in tasks:
            yield d_index, _hash_chunk(path_s, start, end)
        return
    pool = worker_pool(workers - 1, spawn=True)
    assert pool is not None  # spawn is allowed
    with pool:
        window: deque[tuple[int, tuple[str, int, int], Future[_Chunk] | _Chunk]] = deque()
        queue = iter(tasks)
        while True:
            while len(window) <= 2 * workers and (task := next(queue, None)):  # bounded: memory
                args = task[1:]  # does not grow with the log
                window.append((task[0], args, pool.submit(_hash_chunk, *args)))
            if not window:
                return
            d_index, _, head = window[0]
            if isinstance(head, Future) and not head.done():
                for n in range(len(window) - 1, 0, -1):  # rather than wait, hash the last
                    d, args, job = window[n]  # chunk that no worker has started, here
                    if isinstance(job, Future) and job.cancel():
                        window[n] = (d, args, _hash_chunk(*args))
                        break
                else:
                    head.result()  # every chunk is taken: wait for the next one
                continue
            window.popleft()
            yield d_index, head.result() if isinstance(head, Future) else head


def _foreign_lines(
    chunk: _Chunk, path: Path, prefix: Prefix, file_lines: int, report: Report
) -> set[int]:
    """Indexes of the chunk's lines that the original module appended after this log's
    records (not leaves), each noted."""
    out: set[int] = set()
    lengths = array("I")
    if prefix.leaves:  # blank lines among the original module's are not leaves
        lengths.frombytes(chunk.lengths)
        offset = chunk.first_offset
        for k, length in enumerate(lengths):
            if not length and prefix.covers(path.stem, offset):
                out.add(k)
            offset += length + 1
    if not chunk.legacy:
        return out
    if not lengths:
        lengths.frombytes(chunk.lengths)
    for k in chunk.legacy:
        offset = chunk.first_offset + sum(lengths[:k]) + k
        if not prefix.covers(path.stem, offset):
            out.add(k)
            report.add(
                Finding(
                    "foreign_line",
                    f"{path}:{file_lines + k + 1}: a line of the original module written after "
                    "this log's records (a rolling upgrade); not a leaf, no seq; a writer that "
                    "found it at the end of the file recorded its content again (a record "
                    "whose legacy_source names this file and offset)",
                    str(path),
                    file_lines + k + 1,
                )
            )
    return out


def _report_time(report: Report, file: str, day: str, lineno: int, dt: bytes, prev: bytes) -> None:
    """A record's timestamp is not of its file's day, or goes back in time."""
    if not dt:
        return  # no timestamp in this product's form: the original module's line (noted apart)
    if dt[:10] != day.encode():
        report.add(
            Finding(
                "wrong_day",
                f"{file}:{lineno}: a record of {dt[:10].decode(errors='replace')}",
                file,
                lineno,
            )
        )
    if dt < prev:
        report.add(
            Finding(
                "clock_backwards",
                f"{file}:{lineno}: timestamp "
                f"{dt.decode(errors='replace')} is before the previous record's",
                file,
                lineno,
            )
        )
