"""The fast first pass of ``verify`` (SPEC section 4, "Verify"; RFC 9162 section 2.1.1).

Every line of the day files, in order, is hashed as a leaf, ``SHA-256(0x00 || line)``, and
folded into the tree's right edge, ``SHA-256(0x01 || left || right)``; at each size the caller
asks for, the root is kept. The day files are cut into line-aligned chunks of ``CHUNK_BYTES``;
the leaves and the timestamp checks of a chunk are computed in one call, in worker processes
for logs of ``PARALLEL_BYTES`` or more, while this process only folds. Memory is the tree's edge,
O(log n) hashes, and a bounded window of chunks.

Found on the way, as findings: a record's timestamp of another day than its file's
(``wrong_day``) or earlier than the record before (``clock_backwards``), bytes after a file's
last newline (``torn_tail``), and the original module's lines written after this log's records
(``foreign_line``; not leaves). Where the leaves do not match, ``locate`` reads again.

A pass may start part-way (``resume``): from a ``Resume`` point, the tree's edge and the place
of the next leaf, which a pass keeps at the largest size it was asked for (``resume_at``).
``verify_incremental`` carries a verified log on from there, reading only what is new. A
resumed pass does not compare its first record's time with the one before the resume point.
Tests: ``tests/test_verify.py`` (one process, workers and small chunks report alike),
``tests/test_legacy.py``, ``tests/test_faults.py``.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .legacy import Prefix, is_legacy_line
from .report import Finding, Report

__all__ = ["CHUNK_BYTES", "PARALLEL_BYTES", "LeafPass", "Resume", "hash_pass"]

#: A chunk: the lines that start in this many bytes of a day file, hashed in one call.
CHUNK_BYTES = 16 << 20
#: Logs this big or bigger are hashed in worker processes; smaller ones in this process.
PARALLEL_BYTES = 64 << 20


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
    called after each chunk. ``workers``: processes hashing leaves (default: up to 4 for logs
    of ``PARALLEL_BYTES`` or more, else none). Leaf hashing and the timestamp checks happen in
    ``_hash_chunk`` (in worker processes for big logs); this loop only folds.
    ``resume``: carry on from there (``days`` then starts with its day file) rather than
    from the first leaf; ``progress`` then counts from its offset.
    Returns the records, the bytes read, the roots at the sizes asked for, and the places.
    """
    start_at = resume.offset if resume is not None else 0
    total = sum(p.stat().st_size for p in days) - start_at
    if workers is None:
        workers = min(4, os.cpu_count() or 1) if total >= PARALLEL_BYTES else 1
    sha = hashlib.sha256
    stack: list[bytes] = list(resume.edge) if resume is not None else []
    pop, push = stack.pop, stack.append
    size = resume.size if resume is not None else 0
    done = 0
    targets = sorted({s for s in sizes if s > size})
    t_index = 0
    next_size = targets[0] if targets else -1
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
        skip = _foreign_lines(chunk, days[d_index], prefix, file_lines, report)
        for j in range(0, len(leaves), 32):
            if skip and j // 32 in skip:
                continue  # the original module's line after this log's records: not a leaf
            h = leaves[j : j + 32]
            n = size
            while n & 1:
                h = sha(b"\x01" + pop() + h).digest()
                n >>= 1
            push(h)
            size += 1
            if size == next_size:
                root = stack[-1]
                for left in reversed(stack[:-1]):
                    root = sha(b"\x01" + left + root).digest()
                roots[size] = root
                t_index += 1
                next_size = targets[t_index] if t_index < len(targets) else -1
                k = j // 32 + 1  # lines of the chunk up to this leaf's
                upto = sum(array("I", chunk.lengths[: 4 * k])) + k
                places[size] = (d_index, chunk.first_offset + upto)
                resume_at = Resume(
                    size, tuple(stack), days[d_index].stem, places[size][1], file_lines + k
                )
        file_lines += len(leaves) // 32
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
    sha = hashlib.sha256
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
    odd: list[tuple[int, bytes, bytes]] = []
    prev = first_dt = b""
    legacy: list[int] = []
    for k, line in enumerate(parts):
        add(sha(b"\x00" + line).digest())
        if b'"v":' not in line and is_legacy_line(line):
            legacy.append(k)
        i = line.find(b'"datetime_utc":"')
        dt = line[i + 16 : i + 43] if i >= 0 else b""
        if dt < prev or dt[:10] != day:
            odd.append((k, dt, prev))
        prev = dt
        if k == 0:
            first_dt = dt
    lengths = array("I", map(len, parts)).tobytes()
    return _Chunk(first, b"".join(leaves), lengths, first_dt, prev, odd, torn, len(data), legacy)


def _chunks(days: list[Path], workers: int, skip: int = 0) -> Iterator[tuple[int, _Chunk]]:
    """(day index, chunk) in file order, hashed here or by ``workers`` processes; the first
    file from byte ``skip`` on."""
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
    context = multiprocessing.get_context("spawn")  # safe whatever threads the caller runs
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        window: deque[tuple[int, Future[_Chunk]]] = deque()
        for d_index, path_s, start, end in tasks:
            window.append((d_index, pool.submit(_hash_chunk, path_s, start, end)))
            if len(window) > 2 * workers:  # bounded: memory does not grow with the log
                d, future = window.popleft()
                yield d, future.result()
        while window:
            d, future = window.popleft()
            yield d, future.result()


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
