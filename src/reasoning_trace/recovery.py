"""After a crash, or another writer: mending torn tails and finding where the log ends.

A crash can leave bytes after a day file's last newline (SPEC section 2). ``repair_tail``
restores the newline of a whole record (the line parses and its seq follows the line before
it) and moves anything else, never acknowledged, to ``quarantine/``. ``recover_head``
recomputes the head from the day files' tails when the cached one no longer matches, and
``reconcile`` refuses to write when the day files fall short of what was acknowledged or
signed. Lines the original module appended after this product's records are taken in: their
content is recorded again as new records (``legacy_source`` says where from).
All of it runs under the writer lock.
Tests: ``tests/test_faults.py`` (torn tails, lost newlines, SIGKILL during repair),
``tests/test_legacy.py`` (the original module writing beside this product).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import time

import orjson

from .checkpoint import Checkpoints
from .day_files import DayFiles
from .errors import CorruptLine, ReasoningTraceError, UnreconciledLog
from .head import Head, day_of, day_start, instant
from .layout import CHUNK, day_file_name, quarantine
from .legacy import is_legacy_line
from .metrics import incr
from .record import Pending, parse_record, prepare

__all__ = [
    "ORIGINAL_LINE_WAIT",
    "Foreign",
    "ends_as_said",
    "foreign_since",
    "load_head",
    "peek_head",
    "reconcile",
    "recover_head",
    "repair_tail",
    "taken_in",
]

logger = logging.getLogger("reasoning_trace")

#: A line the original module wrote after this product's records: (day, offset, bytes).
Foreign = tuple[str, int, bytes]
#: How the original module's lines begin (``json.dumps(sort_keys=True)``: "action" first).
SEED_START = b'{"action": '
#: How long a writer waits for the original module to finish a line it is writing.
ORIGINAL_LINE_WAIT = 2.0


def repair_tail(files: DayFiles, day: str) -> bool:
    """Mend bytes after the last newline of ``day``'s file, left by an interrupted write.

    A complete record (the line parses and its seq follows the line before it) only lost its
    newline: the newline is restored and the record kept. Anything else was never
    acknowledged: it is cut into ``quarantine/`` for forensics. Returns whether a record was
    restored (the caller's head is then out of date).
    """
    path = files.layout.day_file(day)
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return False
        cut = size
        while cut > 0:
            start = max(0, cut - CHUNK)
            block = os.pread(fd, cut - start, start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                cut = start + nl + 1
                break
            cut = start
        fragment = os.pread(fd, size - cut, cut)
        if fragment.startswith(SEED_START) and not is_legacy_line(fragment):
            size = _await_original(fd, size)  # the original module may be mid-line
            if os.pread(fd, 1, size - 1) == b"\n":
                return False
            fragment = os.pread(fd, size - cut, cut)
        if _is_next_record(files, fragment, day, cut) or is_legacy_line(fragment):
            _write_all_at(fd, b"\n", size)
            os.fsync(fd)
            incr("newlines_restored")
            logger.warning(
                "reasoning_trace: restored the newline of the last record of %s (a complete "
                "record whose final newline was lost)",
                path,
            )
            return True
        qpath = quarantine(files.layout, f"{day_file_name(day)}.{cut}", fragment)
        os.ftruncate(fd, cut)
        os.fsync(fd)
        incr("torn_tails_quarantined")
        logger.warning(
            "reasoning_trace: cut a torn tail of %d bytes from %s at byte %d "
            "(an unacknowledged write interrupted by a crash); kept in %s",
            size - cut,
            path,
            cut,
            qpath,
        )
        return False
    finally:
        os.close(fd)


def _is_next_record(files: DayFiles, fragment: bytes, day: str, offset: int) -> bool:
    """Whether ``fragment`` is a whole record whose seq follows the record before it."""
    path = files.layout.day_file_s(day)
    try:
        rec = parse_record(fragment, file=path, offset=offset)
    except CorruptLine:
        return False
    for prev_off, prev in files.lines_backward(day):
        if prev_off + len(prev) + 1 > offset:
            continue  # the fragment itself, when the file has no newline at all
        try:
            return rec.seq == parse_record(prev).seq + 1
        except CorruptLine:
            return False
    for earlier in reversed([d for d in files.days() if d < day]):
        for _off, prev in files.lines_backward(earlier):
            try:
                return rec.seq == parse_record(prev).seq + 1
            except CorruptLine:
                return False
    return rec.seq == 0


def load_head(
    files: DayFiles, cached: Head | None, *, take_in: bool, own: bool = False
) -> tuple[Head, list[Foreign]]:
    """The head under the writer lock: ``cached`` (from the lock file) if it still matches
    the day file, else recomputed (and repaired); with ``take_in`` (a writer about to append)
    also the original module's lines appended since. ``own``: the cached head is the one this
    writer saved last, byte for byte (its last line need not be read again).

    Raises ``UnreconciledLog`` when the day files hold fewer records than the cached head
    or the newest checkpoint says were written: appending would re-use their seqs.
    """
    head = cached
    layout = files.layout
    if head is not None:
        if head.day is None:
            if head.next_seq == 0 and not files.days():
                return head, []
        else:
            try:
                st = os.stat(layout.day_file_s(head.day))
            except FileNotFoundError:
                st = None
            if (
                st is not None
                and st.st_ino == head.ino
                and st.st_size == head.size
                and (own or ends_as_said(files, head))
            ):
                today = day_of(max(time.time_ns() // 1000, head.micros))  # a wall-clock hint
                if today == head.day or not os.path.exists(layout.day_file_s(today)):
                    return head, []
                # Today's file exists but no writer of ours made it: the original module
                # (which keeps no head) did; take in what it wrote.
                return recover_head(files, since=head) if take_in else (head, [])
    since = None
    if head is not None and head.day is not None and take_in:
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(layout.day_file_s(head.day))
            if st.st_ino == head.ino and st.st_size > head.size:
                since = head  # bytes were appended by something that keeps no head
    found, foreign = recover_head(files, since=since)
    reconcile(files, found, head)
    return found, foreign


def peek_head(files: DayFiles, cached: Head | None) -> Head:
    """The head as a reader sees it: ``cached`` if it still matches the day file, else
    computed from the day files' tails, without the lock and without repairing anything."""
    if cached is not None and cached.day is not None:
        try:
            st = os.stat(files.layout.day_file_s(cached.day))
            if (
                st.st_ino == cached.ino
                and st.st_size == cached.size
                and ends_as_said(files, cached)
            ):
                return cached
        except FileNotFoundError:
            pass
    return recover_head(files, repair=False)[0]


def ends_as_said(files: DayFiles, head: Head) -> bool:
    """Whether the line that ends at the cached head's size is the record the head says came
    last: seq ``next_seq - 1`` at instant ``micros``. The head file is derived, and nothing but
    this check stands between a damaged one and a seq given twice or a clock set ahead for
    good; a head that fails it is recomputed from the day files."""
    if head.day is None or head.size <= 0:
        return False
    try:
        fd = os.open(files.layout.day_file_s(head.day), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        end, tail = head.size - 1, b""
        if os.pread(fd, 1, end) != b"\n":
            return False
        while True:  # the last line: back from its newline to the one before it
            start = max(0, end - max(4096, len(tail)))
            tail = os.pread(fd, end - start, start) + tail
            end = start
            if b"\n" in tail or start == 0:
                break
        line = tail.rsplit(b"\n", 1)[-1]
    finally:
        os.close(fd)
    try:
        rec = parse_record(line)
    except CorruptLine:
        return False
    return rec.seq == head.next_seq - 1 and instant(rec) == head.micros


def recover_head(
    files: DayFiles, *, repair: bool = True, since: Head | None = None
) -> tuple[Head, list[Foreign]]:
    """Recompute the head from the day files' tails, repairing torn tails on the way
    (``repair``: a writer, under the lock); also return the original module's lines found
    after this product's records (all of them appended since ``since``, when given).

    The next seq follows the highest seq that ends any day file and the floor instant is
    the latest instant among them, so even a log written before time was kept monotonic
    (a record in an older day file than its predecessor) never has a seq issued twice. A
    log that holds only the original module's lines continues after them (adoption).
    """
    days = files.days()
    if repair:
        for day in days:
            repair_tail(files, day)
    prefix = files.legacy_prefix()
    best: Head | None = None
    foreign: list[Foreign] = []
    floor = 0
    for day in days:
        path = files.layout.day_file_s(day)
        for offset, line in files.lines_backward(day):
            if prefix.covers(day, offset):
                floor = max(floor, day_start(day))
                break
            try:
                rec = parse_record(line, file=path, offset=offset)
            except CorruptLine:
                if is_legacy_line(line):
                    foreign.append((day, offset, line))
                    floor = max(floor, day_start(day))
                    continue
                raise
            micros = instant(rec)
            if best is None or rec.seq + 1 > best.next_seq:
                best = Head(rec.seq + 1, day, 0, 0, max(micros, best.micros if best else 0))
            else:
                best.micros = max(best.micros, micros)
            break
    if since is not None:
        foreign = foreign_since(files, since, days)
    if best is None:
        if not prefix.leaves:
            return Head(0, None, 0, 0, 0), sorted(foreign)
        best = Head(prefix.leaves, None, 0, 0, 0)
    best.micros = max(best.micros, floor)
    last_day = next(d for d in reversed(days) if os.path.getsize(files.layout.day_file_s(d)))
    st = os.stat(files.layout.day_file_s(last_day))
    return Head(best.next_seq, last_day, st.st_size, st.st_ino, best.micros), sorted(foreign)


def foreign_since(files: DayFiles, since: Head, days: list[str]) -> list[Foreign]:
    """The original module's lines appended since the writers' last head: after its size
    in its day file, and anywhere in later day files."""
    out = []
    for day in days:
        if since.day is None or day < since.day:
            continue
        start = since.size if day == since.day else 0
        for offset, _lineno, line in files.lines(day, start):
            if is_legacy_line(line):
                out.append((day, offset, line))
    return out


def taken_in(foreign: list[Foreign]) -> list[Pending]:
    """The content of the original module's lines found at the ends of day files, prepared to
    be recorded again, each saying where it came from (``legacy_source``).

    Their bytes stay where they are: the original module takes no lock, so cutting them out
    could cut a line it is appending at that instant. Readers pass over them, and ``verify``
    notes them; the records taken in put their content under the signed tree.
    """
    logger.warning(
        "reasoning_trace: %d line(s) written by the original module after this log's "
        "records were found at the end of %s; their content is recorded again as new "
        "records (legacy_source says where from), their bytes stay where they are",
        len(foreign),
        ", ".join(sorted({day_file_name(day) for day, _, _ in foreign})),
    )
    out = []
    for day, offset, line in foreign:
        obj = orjson.loads(line)
        source = {
            "file": day_file_name(day),
            "offset": offset,
            "sha256": hashlib.sha256(line).hexdigest(),
            "datetime_utc": obj.get("datetime_utc"),
        }
        try:
            out.append(
                prepare(
                    obj["action"],
                    obj["approved"],
                    obj.get("votes", {}),
                    obj.get("subject", {}),
                    obj.get("reason", ""),
                    legacy_source=source,
                )
            )
        except ReasoningTraceError as exc:
            logger.error(
                "reasoning_trace: the original module's line at %s byte %d cannot be "
                "recorded again (%s); it stays in place, noted by verify",
                day_file_name(day),
                offset,
                exc,
            )
    return out


def reconcile(files: DayFiles, found: Head, cached: Head | None) -> None:
    """Refuse (``UnreconciledLog``) to write when the day files fall short of what was
    acknowledged (the ``cached`` head) or signed (the newest checkpoint)."""
    root = files.root
    if cached is not None and cached.next_seq > found.next_seq:
        raise UnreconciledLog(
            f"the log at {root} holds {found.next_seq} records, but its writers had "
            f"already stored {cached.next_seq} (.rtrace/lock); records were removed or lost. "
            "Nothing was written: restore the missing records (`rtrace verify` lists them), "
            "or, if the loss is known and accepted, delete .rtrace/lock to continue after "
            "what the day files hold"
        )
    try:
        latest = Checkpoints(root).latest()
    except (OSError, ReasoningTraceError) as exc:
        logger.warning("reasoning_trace: could not read the newest checkpoint: %s", exc)
        return
    if latest is not None and latest.size > found.next_seq:
        raise UnreconciledLog(
            f"the log at {root} holds {found.next_seq} records, but a checkpoint signed "
            f"at {latest.datetime_utc} covers {latest.size} ({latest.file}:{latest.line}); "
            "signed records are missing. Nothing was written: restore them from a backup or "
            "a replica (`rtrace verify` shows what is missing)"
        )


def _await_original(fd: int, size: int) -> int:
    """Wait (bounded) while a file ending in part of an original module's line still grows
    or until it ends with a newline; return its size then."""
    deadline = time.monotonic() + ORIGINAL_LINE_WAIT
    while time.monotonic() < deadline:
        time.sleep(0.01)
        now = os.fstat(fd).st_size
        if now != size:
            deadline = time.monotonic() + ORIGINAL_LINE_WAIT  # still writing: wait on
            size = now
        if os.pread(fd, 1, size - 1) == b"\n":
            break
    return size


def _write_all_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n == 0:
            raise OSError(errno.EIO, "write returned 0")
        offset += n
        view = view[n:]
