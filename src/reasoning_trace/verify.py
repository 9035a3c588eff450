"""Verification an auditor can trust (SPEC section 4): of a whole log, and of single proofs.

``verify(root, vkey=None)`` streams the day files once, hashing every line as a leaf and folding
the tree's right edge, and compares the root at each signed checkpoint's size with what that
checkpoint signed. Spans that do not match, and the records after the newest checkpoint, are
then read a second time and parsed, to say what happened and where: altered, inserted,
deleted, duplicated or reordered records, unparseable lines, a missing day file. Where the
derived hash file is present, each record's leaf hash is compared with the one stored when it
was written, which pins an altered record exactly; without it a change is located to the span
between two checkpoints. The derived files are only read, never rebuilt, so evidence survives.

Memory does not grow with the records: the tree's edge is O(log n) hashes, and only the
checkpoints (one per ``CHECKPOINT_EVERY`` records) and the findings are kept.

The checkpoint signatures are checked with the auditor's verifier keys when given (``vkey``):
whoever can edit the log can also replace ``checkpoints/vkey``.

Checking a single proof needs no log at all: that is ``proof_check``.
Tests: ``tests/test_verify.py`` (the tamper suite) and ``tests/test_auditor.py``.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import orjson

from .checkpoint import Checkpoints, open_checkpoint
from .errors import LogRootMissing, NoteError, SignatureError, UnknownKey
from .files import DERIVED_DIR, resolve_root
from .layout import is_day
from .legacy import Prefix, find_prefix, is_legacy_line
from .note import Verifier, as_verifiers
from .record import parse_utc
from .report import Finding, Report
from .tree import EMPTY_ROOT, HashFile, leaf_hash, stored_hash_index

__all__ = ["STALE_SECONDS", "verify"]


@dataclass
class _Signed:
    size: int
    root: bytes
    where: str  # file:line of its entry
    matched: bool | None = None


def _checkpoints(files: Checkpoints, verifiers: list[Verifier], report: Report) -> list[_Signed]:
    """Every checkpoint whose signature verifies, by size; failures become findings."""
    by_size: dict[int, _Signed] = {}
    for entry in files.entries_and_errors():
        if isinstance(entry, NoteError):
            report.add(Finding("bad_checkpoint", str(entry)))
            continue
        where = f"{entry.file}:{entry.line}"
        try:
            cp = open_checkpoint(entry.note, verifiers)
        except UnknownKey as exc:
            report.add(
                Finding("unknown_key", f"checkpoint at {where}: {exc}", entry.file, entry.line)
            )
            continue
        except SignatureError as exc:
            report.add(
                Finding("bad_signature", f"checkpoint at {where}: {exc}", entry.file, entry.line)
            )
            continue
        except NoteError as exc:
            report.add(
                Finding("bad_checkpoint", f"checkpoint at {where}: {exc}", entry.file, entry.line)
            )
            continue
        if (cp.size, cp.root) != (entry.size, entry.root):
            report.add(
                Finding(
                    "bad_checkpoint",
                    f"checkpoint at {where}: its size/root fields differ from the signed note "
                    f"(note: size {cp.size})",
                    entry.file,
                    entry.line,
                )
            )
        seen = by_size.get(cp.size)
        if seen is not None and seen.root != cp.root:
            report.add(
                Finding(
                    "fork",
                    f"two signed checkpoints of size {cp.size} with different roots: "
                    f"{seen.where} and {where}",
                    entry.file,
                    entry.line,
                    cp.size,
                )
            )
            continue
        by_size.setdefault(cp.size, _Signed(cp.size, cp.root, where))
    return sorted(by_size.values(), key=lambda s: s.size)


class _StoredLeaves:
    """Leaf hashes stored when records were written (derived; read only, may be absent)."""

    def __init__(self, root: Path) -> None:
        path = root / DERIVED_DIR / "hashes"
        self.file = HashFile(str(path), readonly=True) if path.is_file() else None
        self.leaves = self.file.leaves() if self.file else 0

    def get(self, seq: int) -> bytes | None:
        if self.file is None or not 0 <= seq < self.leaves:
            return None
        return self.file.read_hashes([stored_hash_index(0, seq)])[0]


class _Detail:
    """The second pass over a span: parse each line and classify what is wrong."""

    def __init__(self, report: Report, stored: _StoredLeaves, start: int, prefix: Prefix) -> None:
        self.prefix = prefix
        self.report = report
        self.stored = stored
        self.expected = start
        self.missing: list[list[int]] = []  # [lo, hi] ranges of seqs not seen yet
        self.gap_days: dict[int, tuple[str, str]] = {}  # gap start -> (day before, day after)
        self.last_day = ""
        self.suspect: dict[int, tuple[str, int]] = {}  # seq -> place of a mismatching line
        self.found = 0

    def _take_missing(self, seq: int) -> bool:
        for r in self.missing:
            if r[0] <= seq <= r[1]:
                if r[0] == r[1]:
                    self.missing.remove(r)
                elif seq == r[0]:
                    r[0] += 1
                elif seq == r[1]:
                    r[1] -= 1
                else:
                    self.missing.append([seq + 1, r[1]])
                    r[1] = seq - 1
                return True
        return False

    def line(self, file: str, lineno: int, line: bytes) -> None:
        add = self.report.add
        day = os.path.basename(file)[:10]
        if self.prefix.covers_line(day, lineno):  # the original module's: its place is its seq
            if not line:
                return  # a blank line: not a leaf
            seq = self.expected
            stored = self.stored.get(seq)
            if stored is not None and stored != leaf_hash(line):
                self.suspect[seq] = (file, lineno)
            self.expected += 1
            self.last_day = day
            return
        if b'"v":' not in line and is_legacy_line(line):
            return  # not a leaf (noted by the first pass)
        try:
            obj = orjson.loads(line)
            seq = obj["seq"]
            if type(seq) is not int:
                raise TypeError("seq is not an integer")
        except (ValueError, KeyError, TypeError) as exc:
            add(Finding("unparseable", f"{file}:{lineno}: not a record ({exc})", file, lineno))
            self.found += 1
            return
        stored = self.stored.get(seq)
        genuine = None if stored is None else stored == leaf_hash(line)
        day = str(obj.get("datetime_utc", ""))[:10]
        if seq == self.expected:
            self.expected += 1
            self.last_day = day
            if genuine is False:
                self.suspect[seq] = (file, lineno)
        elif seq > self.expected:
            self.missing.append([self.expected, seq - 1])
            self.gap_days[self.expected] = (self.last_day, day)
            self.expected = seq + 1
            if genuine is False:
                self.suspect[seq] = (file, lineno)
            self.last_day = day
        elif self._take_missing(seq):
            self.found += 1
            add(
                Finding(
                    "reordered",
                    f"{file}:{lineno}: seq {seq} comes after seq {self.expected - 1}",
                    file,
                    lineno,
                    seq,
                    seq,
                )
            )
        elif seq in self.suspect and genuine is True:
            # The earlier line with this seq was never written by the log: it was inserted.
            f0, l0 = self.suspect.pop(seq)
            self.found += 1
            add(
                Finding(
                    "inserted",
                    f"{f0}:{l0}: a line with seq {seq} that the log never "
                    f"wrote (the genuine one is at {file}:{lineno})",
                    f0,
                    l0,
                    seq,
                    seq,
                )
            )
        else:
            self.found += 1
            kind = "duplicate" if genuine is not False else "inserted"
            add(Finding(kind, f"{file}:{lineno}: seq {seq} appears again", file, lineno, seq, seq))

    def finish(self, day_files: set[str]) -> None:
        for seq, (file, lineno) in sorted(self.suspect.items()):
            self.found += 1
            self.report.add(
                Finding(
                    "altered",
                    f"{file}:{lineno}: record seq {seq} differs from what was written and signed",
                    file,
                    lineno,
                    seq,
                    seq,
                )
            )
        for lo, hi in sorted(self.missing):
            self.found += 1
            before, after = self.gap_days.get(lo, ("", ""))
            gone = [d for d in _days_between(before, after) if d not in day_files]
            if gone:
                kind, extra = "missing_day_file", f"; no day file for {', '.join(gone)}"
            else:
                kind, extra = "deleted", ""
            self.report.add(Finding(kind, f"seq {lo}..{hi} missing{extra}", None, None, lo, hi))


def _days_between(before: str, after: str) -> list[str]:
    """The UTC days strictly between two ``YYYY-MM-DD`` days (none if either is unknown)."""
    try:
        a, b = date.fromisoformat(before), date.fromisoformat(after)
    except ValueError:
        return []
    return [(a + timedelta(days=i)).isoformat() for i in range(1, (b - a).days)]


def verify(
    root: str | os.PathLike[str] | None = None,
    vkey: str | Verifier | Iterable[str | Verifier] | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    trusted: Iterable[str] = (),
    now: float | None = None,
) -> Report:
    """Verify the log at ``root`` against its signed checkpoints; see the module docstring.

    ``vkey``: the auditor's verifier key(s); default, the keys the log published. A pinned
    key fails closed: records and no checkpoint it verifies is a failure. ``trusted``:
    checkpoint notes the auditor kept from before (signed by ``vkey``); the log fails if it
    is shorter than one (a rollback) or its tree at that size has another root (a fork).
    ``now`` (Unix seconds, default the clock): unsigned records older than a writer's signing
    schedule by then are a failure, not a fresh tail.
    ``progress(done_bytes, total_bytes)`` is called as the day files are read.
    ``workers``: processes hashing leaves (default: up to 4 for logs over 64 MiB, else none).
    """
    base = resolve_root(root)
    if not base.is_dir():
        raise LogRootMissing(f"no log at {base}: nothing to verify")
    report = Report(str(base))
    files = Checkpoints(base)
    verifiers = as_verifiers(vkey)
    if verifiers is None:
        verifiers = files.verifiers()
    signed = _checkpoints(files, verifiers, report)
    kept = _trusted(trusted, verifiers, report)
    for path, offset, length in files.torn():
        report.add(
            Finding(
                "torn_tail",
                f"{path}: {length} bytes after the last newline at byte {offset} (a checkpoint "
                "write interrupted by a crash; the next writer moves them to quarantine/)",
                str(path),
            )
        )
    if not verifiers and files.days():
        report.add(
            Finding(
                "no_key",
                "the log has checkpoints but no verifier key to check them (give one with vkey=)",
            )
        )
    named = [p for p in base.glob("*.jsonl") if is_day(p.stem)]
    named += [p for p in (base / "checkpoints").glob("*.jsonl") if is_day(p.stem)]
    for odd in sorted(p for p in named if p.is_symlink() or not p.is_file()):
        report.add(
            Finding(
                "odd_entry",
                f"{odd}: named like a day file but not a regular file (a "
                f"{'link' if odd.is_symlink() else 'directory or device'}); not read",
                str(odd),
            )
        )
    days = sorted(p for p in named if p.parent == base and p.is_file() and not p.is_symlink())
    total = sum(p.stat().st_size for p in days)

    # Pass 1: hash every line, compare roots at the signed sizes.
    if workers is None:
        workers = min(4, os.cpu_count() or 1) if total >= PARALLEL_BYTES else 1
    prefix = find_prefix(str(base), [p.stem for p in days])
    if prefix.leaves:
        report.add(
            Finding(
                "legacy",
                f"seq 0..{prefix.leaves - 1}: {prefix.parsed} records written by the original "
                "module (and any lines of its that do not parse), kept as they are and covered "
                "by the tree from their adoption on",
                None,
                None,
                0,
                prefix.leaves - 1,
            )
        )
    for day, lineno in prefix.unparseable:
        file = str(base / f"{day}.jsonl")
        report.add(
            Finding(
                "legacy_unparseable",
                f"{file}:{lineno}: a line of the original module that is not a record (torn or "
                "interleaved by its concurrent writers); kept as it is, a leaf of the tree",
                file,
                lineno,
            )
        )
    targets = sorted([*signed, *kept], key=lambda t: t.size)
    size, done, places = _hash_pass(days, targets, report, total, progress, workers, prefix)
    for k in kept:
        if k.size > size:
            report.add(
                Finding(
                    "rollback",
                    f"the log has {size} records, fewer than the {k.size} of the checkpoint you "
                    f"kept ({k.where}): records were removed after it was signed",
                    None,
                    None,
                    size,
                    k.size - 1,
                )
            )
        elif not (k.matched or (k.size == 0 and k.root == EMPTY_ROOT)):
            report.add(
                Finding(
                    "trusted_mismatch",
                    f"the log's first {k.size} records do not hash to the root of the checkpoint "
                    f"you kept ({k.where}): its signed history was rewritten",
                    None,
                    None,
                    0,
                    k.size - 1,
                )
            )
    report.records, report.bytes = size, done
    if size == 0 and any(s.size == 0 for s in signed):
        for s in signed:
            if s.size == 0:
                s.matched = s.root == EMPTY_ROOT

    # Which spans need a closer look.
    spans: list[tuple[int, int]] = []
    good = 0
    for s in signed:
        if s.size > size:
            report.add(
                Finding(
                    "truncated",
                    f"the log has {size} records, but a checkpoint ({s.where}) signed {s.size}",
                    None,
                    None,
                    size,
                    s.size - 1,
                )
            )
            continue
        if s.matched:
            report.checkpoints += 1
            good = max(good, s.size)
        else:
            report.add(
                Finding(
                    "checkpoint_mismatch",
                    f"records before seq {s.size} do not hash "
                    f"to the root signed at {s.where}; the change is in seq "
                    f"{good}..{s.size - 1}",
                    None,
                    None,
                    good,
                    s.size - 1,
                )
            )
            spans.append((good, s.size))
    report.signed_size = good
    newest = max((s.size for s in signed), default=0)
    if vkey is not None and size and not report.checkpoints:
        report.add(
            Finding(
                "no_checkpoint",
                f"{size} records and not one checkpoint that the verifier key you gave "
                "verifies: nothing here is proven (were checkpoints deleted?)",
                None,
                None,
                0,
                size - 1,
            )
        )
    stale = _stale_unsigned(days, places, newest, size)
    if not stale and size > newest:
        stale = _old_unsigned(days[-1] if days else None, time.time() if now is None else now)
    if stale:
        report.add(
            Finding(
                "unsigned_stale",
                f"seq {newest}..{size - 1}: not covered by a signed checkpoint although a "
                f"writer would have signed them by now ({stale} is past its signing schedule: "
                "a writer signs when a UTC day ends, every few minutes while the log grows and "
                "on close); their checkpoint is missing, or the writer died and nobody signed "
                "since (`rtrace checkpoint --now` signs what is there)",
                None,
                None,
                newest,
                size - 1,
            )
        )
    elif size > newest:
        report.add(
            Finding(
                "unsigned",
                f"seq {newest}..{size - 1}: not yet covered by a signed checkpoint",
                None,
                None,
                newest,
                size - 1,
            )
        )
    spans.append((good, size))

    # Pass 2: parse and classify from the first suspect record to the end. Every root covers
    # all records before it, so after the first mismatch nothing later can match.
    stored = _StoredLeaves(base)
    start = max(k for k in places if k <= min(lo for lo, _ in spans))
    if start < size:  # else every record is covered by a matching checkpoint
        detail = _Detail(report, stored, start, prefix)
        d_index, offset = places[start]
        if start:  # the day of the record just before the pass, for a gap right at it
            detail.last_day = days[d_index - 1 if offset == 0 else d_index].stem
        for path in days[d_index:]:
            file = str(path)
            for lineno, line in _lines(path, offset if path == days[d_index] else 0):
                detail.line(file, lineno, line)
        detail.finish({p.stem for p in days})
    if stored.file is not None:
        stored.file.close()

    quarantine = base / "quarantine"
    if quarantine.is_dir():
        for fragment in sorted(quarantine.iterdir()):
            report.add(
                Finding(
                    "crash_fragment",
                    f"{fragment}: {fragment.stat().st_size} bytes "
                    "cut from a torn write after a crash (never acknowledged)",
                    str(fragment),
                )
            )
    return report


CHUNK_BYTES = 16 << 20
PARALLEL_BYTES = 64 << 20  # smaller logs are hashed in this process


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


def _chunks(days: list[Path], workers: int) -> Iterator[tuple[int, _Chunk]]:
    """(day index, chunk) in file order, hashed here or by ``workers`` processes."""
    tasks = []
    for d_index, path in enumerate(days):
        size = path.stat().st_size
        for start in range(0, max(size, 1), CHUNK_BYTES):
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


def _hash_pass(
    days: list[Path],
    signed: list[_Signed],
    report: Report,
    total: int,
    progress: Callable[[int, int], None] | None,
    workers: int,
    prefix: Prefix,
) -> tuple[int, int, dict[int, tuple[int, int]]]:
    """Fold every leaf into the tree's edge and compare the root at each signed size.

    Returns (records, bytes, places): places maps each signed size reached to the (day file
    index, byte offset) where the next record starts. Leaf hashing and the timestamp checks
    happen in ``_hash_chunk`` (in worker processes for big logs); this loop only folds.
    """
    sha = hashlib.sha256
    stack: list[bytes] = []
    pop, push = stack.pop, stack.append
    size = done = 0
    targets = [s for s in signed if s.size > 0]
    t_index = 0
    next_size = targets[0].size if targets else -1
    places: dict[int, tuple[int, int]] = {0: (0, 0)}
    last_dt = b""
    current, file_lines = -1, 0
    for d_index, chunk in _chunks(days, workers):
        if d_index != current:
            places.setdefault(size, (d_index, 0))
            current, file_lines = d_index, 0
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
                while t_index < len(targets) and targets[t_index].size == size:
                    targets[t_index].matched = root == targets[t_index].root
                    t_index += 1
                next_size = targets[t_index].size if t_index < len(targets) else -1
                k = j // 32 + 1  # lines of the chunk up to this leaf's
                upto = sum(array("I", chunk.lengths[: 4 * k])) + k
                places[size] = (d_index, chunk.first_offset + upto)
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
    return size, done, places


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


def _trusted(notes: Iterable[str], verifiers: list[Verifier], report: Report) -> list[_Signed]:
    """The checkpoints the auditor kept, each verified with their keys (else a finding)."""
    out = []
    for n, note in enumerate(notes, 1):
        try:
            cp = open_checkpoint(note, verifiers)
        except (NoteError, SignatureError) as exc:
            report.add(Finding("bad_checkpoint", f"the checkpoint you kept (#{n}): {exc}"))
            continue
        out.append(_Signed(cp.size, cp.root, f"kept checkpoint #{n}, size {cp.size}"))
    return out


#: Unsigned records older than this (seconds) were due a checkpoint: a running writer signs
#: every CHECKPOINT_SECONDS while the log grows and on close.
STALE_SECONDS = 5 * 60


def _old_unsigned(last_file: Path | None, now: float) -> str | None:
    """The instant of the log's last record, if it is older than ``STALE_SECONDS``."""
    if last_file is None:
        return None
    with open(last_file, "rb") as fh:
        fh.seek(max(0, last_file.stat().st_size - 65536))
        tail = fh.read().split(b"\n")
    for line in reversed(tail):
        i = line.find(b'"datetime_utc":"')
        if i >= 0:
            when = line[i + 16 : i + 43].decode(errors="replace")
            try:
                age = now - parse_utc(when) / 1e6
            except ValueError:
                return None
            return f"the last record, {when}" if age > STALE_SECONDS else None
    return None


def _stale_unsigned(
    days: list[Path], places: dict[int, tuple[int, int]], newest: int, size: int
) -> str | None:
    """The later day, if unsigned records (after the newest checkpoint) belong to a UTC day
    that ended before the log's last record: a writer would have signed them at that day's
    end (whatever its other signing settings)."""
    if size <= newest or newest not in places:
        return None
    d_index, offset = places[newest]
    while d_index < len(days) and offset >= days[d_index].stat().st_size:
        d_index, offset = d_index + 1, 0  # the next unsigned record starts in a later file
    last = max((i for i, p in enumerate(days) if p.stat().st_size), default=-1)
    return f"a later day, {days[last].stem}, follows" if d_index < last else None


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


def _lines(path: Path, start: int) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of complete lines from byte ``start`` (a line boundary)."""
    with open(path, "rb") as fh:
        lineno = fh.read(start).count(b"\n") if start else 0
        for raw in fh:
            if not raw.endswith(b"\n"):
                return
            lineno += 1
            yield lineno, raw[:-1]
