"""The file store: day files of JSON lines under one root directory (SPEC sections 2 and 3).

Layout::

    <root>/<YYYY-MM-DD>.jsonl      the records, only ever appended to
    <root>/quarantine/             torn tails cut off after a crash, kept for forensics
    <root>/.rtrace/lock            writer lock; also caches the head (derived)
    <root>/.rtrace/index.sqlite    id/seq index (derived)

Writers on one host, in any number of threads and processes, serialise on an ``flock`` of the
lock file; the ``seq`` and the instant of each record are taken under it, so the day file and the
timestamp come from the same clock reading. The head (next seq, last day file, its size and
inode) is cached in the lock file and trusted only when the day file's inode and size still
match; otherwise it is recomputed from the tails of the day files, repairing torn tails on the
way. Opening a log and appending to it therefore never scan it.

A failed write is rolled back with ``ftruncate`` to the size before the batch, so a refused or
failed batch leaves no partial line and consumes no seq.
Tests: ``tests/test_files.py``, ``tests/test_processes.py`` (SIGKILL rounds, many writers).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
import platformdirs

from .checkpoint import Checkpoints, TreeState
from .errors import (
    ConflictError,
    CorruptLine,
    LogRootMissing,
    NotFound,
    ReasoningTraceError,
    StorageError,
    UnreconciledLog,
    UsageError,
)
from .index import Index
from .layout import fsync_dir as _fsync_dir
from .layout import quarantine, reader_cache
from .legacy import Prefix, find_prefix, is_legacy_line, read_line
from .metrics import incr, observe_max
from .query import Filter
from .record import (
    MAX_MICROS,
    Decision,
    Pending,
    decision_from_dict,
    format_utc,
    parse_record,
    parse_utc,
    prepare,
)
from .store import AppendResult

__all__ = ["FileStore", "Sync", "resolve_root", "resolve_sync"]

logger = logging.getLogger("reasoning_trace")

Sync = Literal["batch", "always", "never"]
T = TypeVar("T")
SYNC_MODES: tuple[Sync, ...] = ("batch", "always", "never")
DERIVED_DIR = ".rtrace"
_DAY_RE = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})\.jsonl\Z")
_CHUNK = 1 << 20
_HEAD_BYTES = 96
#: Longest a busy process keeps the writer lock across consecutive batches.
LEASE_SECONDS = 0.005


def resolve_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The log root: the argument, else ``$REASONING_TRACE_DIR``, else the per-user data dir.

    Never relative to the working directory unless the caller passed a relative path.
    """
    if root is None or root == "":
        root = os.environ.get("REASONING_TRACE_DIR") or os.path.join(
            platformdirs.user_data_dir("reasoning-trace", appauthor=False), "log"
        )
    return Path(os.path.abspath(os.path.expanduser(os.fspath(root))))


def resolve_sync(sync: str | None) -> Sync:
    """The durability mode: the argument, else ``$REASONING_TRACE_SYNC``, else ``batch``."""
    value = sync or os.environ.get("REASONING_TRACE_SYNC") or "batch"
    if value not in SYNC_MODES:
        raise UsageError(f"sync must be one of {', '.join(SYNC_MODES)}, not {value!r}")
    return value


def _storage_error(action: str, exc: OSError) -> StorageError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    where = f" ({exc.filename})" if exc.filename else ""
    return StorageError(f"could not {action}: {reason}{where}", exc.errno or 0)


class _Head:
    """Where the log ends: next seq, the day file holding the last record, its size, inode, and
    the last record's instant (Unix microseconds), below which no new record's instant goes."""

    __slots__ = ("day", "ino", "micros", "next_seq", "size")

    def __init__(self, next_seq: int, day: str | None, size: int, ino: int, micros: int) -> None:
        self.next_seq, self.day, self.size, self.ino = next_seq, day, size, ino
        self.micros = micros

    def encode(self) -> bytes:
        text = f"{self.next_seq} {self.day or '-'} {self.size} {self.ino} {self.micros}\n"
        return text.encode().ljust(_HEAD_BYTES, b" ")

    @staticmethod
    def invalid() -> bytes:
        """A head that never decodes: the next writer recomputes it from the day files."""
        return b"-".ljust(_HEAD_BYTES, b" ")

    @classmethod
    def decode(cls, raw: bytes) -> _Head | None:
        parts = raw.split()
        if len(parts) != 5:
            return None
        try:
            day = parts[1].decode()
            n, size, ino, micros = int(parts[0]), int(parts[2]), int(parts[3]), int(parts[4])
        except ValueError:
            return None
        return cls(n, None if day == "-" else day, size, ino, micros)


class FileStore:
    """Day files under one root directory; see the module docstring."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        sync: Sync = "batch",
        create: bool = True,
        clock: Callable[[], int] = time.time_ns,
        tree: Callable[[Path], TreeState] | None = None,
    ) -> None:
        self.root = Path(os.path.abspath(root))
        self.sync: Sync = sync
        self._clock = clock
        if not self.root.is_dir():
            if not create:
                raise LogRootMissing(f"log root {self.root} does not exist")
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                _fsync_dir(self.root.parent)
            except OSError as exc:
                raise _storage_error(f"create the log root {self.root}", exc) from exc
        self._root_s = str(self.root)
        self._derived = os.path.join(self._root_s, DERIVED_DIR)
        self._lock_s = os.path.join(self._derived, "lock")
        self._lock_fd: int | None = None  # the head file (.rtrace/lock), a cache
        self._lock_ino = 0
        self._root_fd: int | None = None  # the root directory, flocked by the writer
        self._root_ino = 0
        self._lease: _Head | None = None  # head while the lock is kept between batches
        self._lease_start = 0.0
        self._day_fd: tuple[str, int, int] | None = None  # (day, fd, inode) kept open
        self._mutex = threading.Lock()  # one writer thread of this store at a time
        self._index: Index | None = None
        self._closed = False
        self._behind = False  # the clock was last seen behind the log's newest instant
        self._head_stale = False  # the head in the lock file must be recomputed
        self._ready = False  # the signing key was checked (before the first append)
        self._prefix: Prefix | None = None  # the legacy prefix, once it can no longer change
        self._growing: tuple[tuple[tuple[str, int, int], ...], Prefix] | None = None  # before
        self._taken: list[Pending] = []  # the original module's lines, to record again
        self._writer = False  # this store appended (or signed): the log's writer
        self._cache: Path | None = None  # a reader's derived state (index, hashes)
        self._reader_tree: TreeState | None = None
        self._scratch: tempfile.TemporaryDirectory[str] | None = None  # the reader's tree hashes
        self.tree = tree(self.root) if tree is not None else None

    # --- paths -------------------------------------------------------------------------------

    def day_path(self, day: str) -> Path:
        """The file holding the records of UTC day ``day``."""
        return self.root / f"{day}.jsonl"

    def _day_s(self, day: str) -> str:
        return f"{self._root_s}/{day}.jsonl"

    def days(self) -> list[str]:
        """The days that have a day file, oldest first."""
        try:
            with os.scandir(self.root) as entries:
                return sorted(
                    m.group(1)
                    for e in entries
                    if (m := _DAY_RE.match(e.name)) and e.is_file(follow_symlinks=False)
                )
        except FileNotFoundError as exc:
            raise LogRootMissing(f"log root {self.root} does not exist") from exc

    # --- writer lock and head ----------------------------------------------------------------

    def _lock(self) -> int:
        """Take the cross-process writer lock; return the fd of the head file.

        The lock is an ``flock`` of the root directory itself, not of a file under
        ``.rtrace/``: deleting the derived directory (documented as safe) while writers run
        can then never let two of them hold "the" lock at once. The head file under
        ``.rtrace/`` is only a cache, re-created when it was deleted or replaced.
        """
        while True:
            if self._root_fd is None:
                try:
                    fd = os.open(self._root_s, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                except FileNotFoundError as exc:
                    raise LogRootMissing(
                        f"log root {self.root} was removed while the log was open; "
                        "nothing was written (restore or recreate it to continue)"
                    ) from exc
                self._root_fd, self._root_ino = fd, os.fstat(fd).st_ino
            fcntl.flock(self._root_fd, fcntl.LOCK_EX)
            try:
                same = os.stat(self._root_s).st_ino == self._root_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            # The root was removed or replaced: lock the directory now at that path.
            fcntl.flock(self._root_fd, fcntl.LOCK_UN)
            os.close(self._root_fd)
            self._root_fd = None
        try:
            if self._lock_fd is not None and os.stat(self._lock_s).st_ino == self._lock_ino:
                return self._lock_fd
        except FileNotFoundError:
            pass
        if self._lock_fd is not None:  # the head file was deleted or replaced
            os.close(self._lock_fd)
            self._lock_fd = None
        try:
            for attempt in itertools.count():
                with contextlib.suppress(FileExistsError):
                    os.mkdir(self._derived)
                try:
                    fd = os.open(self._lock_s, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                    break
                except FileNotFoundError:
                    if attempt >= 100:  # .rtrace/ deleted again between mkdir and open
                        raise
        except BaseException:
            fcntl.flock(self._root_fd, fcntl.LOCK_UN)
            raise
        self._lock_fd, self._lock_ino = fd, os.fstat(fd).st_ino
        return fd

    def _unlock(self) -> None:
        if self._root_fd is not None:
            fcntl.flock(self._root_fd, fcntl.LOCK_UN)

    def _load_head(self, lock_fd: int, *, take_in: bool = False) -> _Head:
        """The cached head if it still matches the day file, else recomputed (and repaired).

        Raises ``UnreconciledLog`` when the day files hold fewer records than the cached head
        or the newest checkpoint says were written: appending would re-use their seqs.
        """
        head = _Head.decode(os.pread(lock_fd, _HEAD_BYTES, 0))
        if head is not None:
            if head.day is None:
                if head.next_seq == 0 and not self.days():
                    return head
            else:
                try:
                    st = os.stat(self._day_s(head.day))
                except FileNotFoundError:
                    st = None
                if st is not None and st.st_ino == head.ino and st.st_size == head.size:
                    today = _day_of(max(time.time_ns() // 1000, head.micros))  # a wall-clock hint
                    if today == head.day or not os.path.exists(self._day_s(today)):
                        return head
                    # Today's file exists but no writer of ours made it: the original module
                    # (which keeps no head) did; take in what it wrote.
                    return self._recover_head(take_in, since=head) if take_in else head
        since = None
        if head is not None and head.day is not None and take_in:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(self._day_s(head.day))
                if st.st_ino == head.ino and st.st_size > head.size:
                    since = head  # bytes were appended by something that keeps no head
        found = self._recover_head(take_in, since=since)
        self._reconcile(found, head)
        return found

    def _save_head(self, lock_fd: int, head: _Head) -> None:
        os.pwrite(lock_fd, head.encode(), 0)

    def _recover_head(
        self, take_in: bool = False, *, repair: bool = True, since: _Head | None = None
    ) -> _Head:
        """Recompute the head from the day files' tails, repairing torn tails on the way.

        The next seq follows the highest seq that ends any day file and the floor instant is
        the latest instant among them, so even a log written before time was kept monotonic
        (a record in an older day file than its predecessor) never has a seq issued twice. A
        log that holds only the original module's lines continues after them (adoption).
        Lines the original module appended after this product's records are passed over;
        with ``take_in`` (a writer) their content is queued to be recorded again, saying
        where it came from.
        """
        days = self.days()
        if repair:
            for day in days:
                self._repair_tail(day)
        prefix = self.legacy_prefix()
        best: _Head | None = None
        foreign: list[tuple[str, int, bytes]] = []
        floor = 0
        for day in days:
            path = self.day_path(day)
            for offset, line in self._lines_backward(path):
                if prefix.covers(day, offset):
                    floor = max(floor, _day_start(day))
                    break
                try:
                    rec = parse_record(line, file=str(path), offset=offset)
                except CorruptLine:
                    if is_legacy_line(line):
                        foreign.append((day, offset, line))
                        floor = max(floor, _day_start(day))
                        continue
                    raise
                micros = _instant(rec)
                if best is None or rec.seq + 1 > best.next_seq:
                    best = _Head(rec.seq + 1, day, 0, 0, max(micros, best.micros if best else 0))
                else:
                    best.micros = max(best.micros, micros)
                break
        if take_in and since is not None:
            foreign = self._foreign_since(since, days)
        if foreign and take_in:
            self._take_in(sorted(foreign))
        if best is None:
            if not prefix.leaves:
                return _Head(0, None, 0, 0, 0)
            best = _Head(prefix.leaves, None, 0, 0, 0)
        best.micros = max(best.micros, floor)
        last_day = next(d for d in reversed(days) if os.path.getsize(self._day_s(d)))
        st = os.stat(self._day_s(last_day))
        return _Head(best.next_seq, last_day, st.st_size, st.st_ino, best.micros)

    def _foreign_since(self, since: _Head, days: list[str]) -> list[tuple[str, int, bytes]]:
        """The original module's lines appended since the writers' last head: after its size
        in its day file, and anywhere in later day files."""
        out = []
        for day in days:
            if since.day is None or day < since.day:
                continue
            start = since.size if day == since.day else 0
            for offset, _lineno, line in self.lines(day, start):
                if is_legacy_line(line):
                    out.append((day, offset, line))
        return out

    def _take_in(self, foreign: list[tuple[str, int, bytes]]) -> None:
        """Queue the content of the original module's lines found at the ends of day files to
        be recorded (by the append under way), each saying where it came from.

        Their bytes stay where they are: the original module takes no lock, so cutting them
        out could cut a line it is appending at that instant. Readers pass over them, and
        ``verify`` notes them; the records taken in put their content under the signed tree.
        """
        logger.warning(
            "reasoning_trace: %d line(s) written by the original module after this log's "
            "records were found at the end of %s; their content is recorded again as new "
            "records (legacy_source says where from), their bytes stay where they are",
            len(foreign),
            ", ".join(sorted({f"{day}.jsonl" for day, _, _ in foreign})),
        )
        for day, offset, line in foreign:
            obj = orjson.loads(line)
            source = {
                "file": f"{day}.jsonl",
                "offset": offset,
                "sha256": hashlib.sha256(line).hexdigest(),
                "datetime_utc": obj.get("datetime_utc"),
            }
            try:
                self._taken.append(
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
                    "reasoning_trace: the original module's line at %s.jsonl byte %d cannot be "
                    "recorded again (%s); it stays in place, noted by verify",
                    day,
                    offset,
                    exc,
                )

    def _reconcile(self, found: _Head, cached: _Head | None) -> None:
        """Refuse to write when the day files fall short of what was acknowledged or signed."""
        if cached is not None and cached.next_seq > found.next_seq:
            raise UnreconciledLog(
                f"the log at {self.root} holds {found.next_seq} records, but its writers had "
                f"already stored {cached.next_seq} (.rtrace/lock); records were removed or lost. "
                "Nothing was written: restore the missing records (`rtrace verify` lists them), "
                "or, if the loss is known and accepted, delete .rtrace/lock to continue after "
                "what the day files hold"
            )
        try:
            latest = Checkpoints(self.root).latest()
        except (OSError, ReasoningTraceError) as exc:
            logger.warning("reasoning_trace: could not read the newest checkpoint: %s", exc)
            return
        if latest is not None and latest.size > found.next_seq:
            raise UnreconciledLog(
                f"the log at {self.root} holds {found.next_seq} records, but a checkpoint signed "
                f"at {latest.datetime_utc} covers {latest.size} ({latest.file}:{latest.line}); "
                "signed records are missing. Nothing was written: restore them from a backup or "
                "a replica (`rtrace verify` shows what is missing)"
            )

    def _repair_tail(self, day: str) -> bool:
        """Mend bytes after the last newline of ``day``'s file, left by an interrupted write.

        A complete record (the line parses and its seq follows the line before it) only lost its
        newline: the newline is restored and the record kept. Anything else was never
        acknowledged: it is cut into ``quarantine/`` for forensics. Returns whether a record was
        restored (the caller's head is then out of date).
        """
        path = self.day_path(day)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
                return False
            cut = size
            while cut > 0:
                start = max(0, cut - _CHUNK)
                block = os.pread(fd, cut - start, start)
                nl = block.rfind(b"\n")
                if nl >= 0:
                    cut = start + nl + 1
                    break
                cut = start
            fragment = os.pread(fd, size - cut, cut)
            if fragment.startswith(_SEED_START) and not is_legacy_line(fragment):
                size = _await_original(fd, size)  # the original module may be mid-line
                if os.pread(fd, 1, size - 1) == b"\n":
                    return False
                fragment = os.pread(fd, size - cut, cut)
            if self._is_next_record(fragment, path, cut) or is_legacy_line(fragment):
                _write_all_at(fd, b"\n", size)
                os.fsync(fd)
                incr("newlines_restored")
                logger.warning(
                    "reasoning_trace: restored the newline of the last record of %s (a complete "
                    "record whose final newline was lost)",
                    path,
                )
                return True
            qpath = quarantine(self.root, f"{day}.jsonl.{cut}", fragment)
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

    def _is_next_record(self, fragment: bytes, path: Path, offset: int) -> bool:
        """Whether ``fragment`` is a whole record whose seq follows the record before it."""
        try:
            rec = parse_record(fragment, file=str(path), offset=offset)
        except CorruptLine:
            return False
        for prev_off, prev in self._lines_backward(path):
            if prev_off + len(prev) + 1 > offset:
                continue  # the fragment itself, when the file has no newline at all
            try:
                return rec.seq == parse_record(prev).seq + 1
            except CorruptLine:
                return False
        previous = [d for d in self.days() if d < path.name[:10]]
        for day in reversed(previous):
            for _off, prev in self._lines_backward(self.day_path(day)):
                try:
                    return rec.seq == parse_record(prev).seq + 1
                except CorruptLine:
                    return False
        return rec.seq == 0

    # --- appending ---------------------------------------------------------------------------

    @property
    def writes(self) -> bool:
        """Whether this store has written (it is then the log's writer: it holds derived
        state under the root and signs on close). A store that only reads never writes."""
        return self._writer

    def _derived_path(self, name: str) -> Path:
        """Where derived state named ``name`` lives: under ``.rtrace/`` for a writer, in the
        per-user cache for a reader (reading never writes under the root)."""
        if self._writer:
            return self.root / DERIVED_DIR / name
        if self._cache is None:
            self._cache = reader_cache(self.root)
        return self._cache / name

    def _peek_head(self) -> _Head:
        """The head as a reader sees it: the writers' cached head if it still matches the day
        file, else computed from the day files' tails, without taking the lock or repairing."""
        try:
            fd = os.open(self._lock_s, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            head = None
        else:
            try:
                head = _Head.decode(os.pread(fd, _HEAD_BYTES, 0))
            finally:
                os.close(fd)
        if head is not None and head.day is not None:
            try:
                st = os.stat(self._day_s(head.day))
                if st.st_ino == head.ino and st.st_size == head.size:
                    return head
            except FileNotFoundError:
                pass
        return self._recover_head(repair=False)

    def size(self) -> int:
        """The number of records (next seq), from the validated head."""
        with self._mutex:
            if self._lease is not None:
                return self._lease.next_seq
            if not self._writer:
                return self._peek_head().next_seq
            fd = self._lock()
            try:
                return self._load_head(fd).next_seq
            finally:
                self._unlock()

    def append(self, batch: Sequence[Pending], *, keep_lock: bool = False) -> list[AppendResult]:
        """Store ``batch`` under the writer lock; see ``Store.append``.

        ``keep_lock`` says more records are already queued in this process: the writer lock is
        then kept for the next batch (a lease of at most ``LEASE_SECONDS``), which then skips
        re-locking and re-validating the head. ``release`` ends the lease.
        """
        if self._closed:
            raise StorageError("the log is closed")
        if not self._ready and self.tree is not None:
            self.tree.ready()  # a log never records while it cannot sign
        self._ready = self._writer = True
        with self._mutex:
            lease = self._lease
            if lease is None:
                try:
                    fd = self._lock()
                    head = self._load_head(fd, take_in=True)
                except StorageError:
                    self._unlock()
                    raise
                except OSError as exc:
                    self._unlock()
                    raise _storage_error(f"lock {self._lock_s}", exc) from exc
                self._lease_start = time.monotonic()
            else:
                fd, head = self._lock_fd, lease  # type: ignore[assignment]
                kept = self._day_fd
                if kept is None or kept[0] != lease.day or os.fstat(kept[1]).st_size != lease.size:
                    # Something that takes no lock (the original module) appended meanwhile.
                    self._save_head(fd, lease)
                    head = self._load_head(fd, take_in=True)
                    lease = None
            self._lease = None
            try:
                if self._taken:  # the original module's lines first, in their order
                    taken, self._taken = self._taken, []
                    head = self._append_locked(fd, head, taken)[1]
                results, head = self._append_locked(fd, head, batch, trusted=lease is not None)
            except (CorruptLine, StorageError):
                self._end_lease(fd, head)
                raise
            except OSError as exc:
                self._end_lease(fd, head)
                raise _storage_error(f"append to {self.root}", exc) from exc
            if keep_lock and time.monotonic() - self._lease_start < LEASE_SECONDS:
                self._lease = head
            else:
                self._end_lease(fd, head)
            return results

    def release(self) -> None:
        """End a lease ``append(keep_lock=True)`` left: save the head, unlock."""
        with self._mutex:
            if self._lease is not None and self._lock_fd is not None:
                head, self._lease = self._lease, None
                self._end_lease(self._lock_fd, head)

    def _end_lease(self, fd: int, head: _Head) -> None:
        try:
            if self.tree is not None:
                try:
                    self.tree.flush()
                except OSError as exc:  # derived: the next writer catches the file up
                    self.tree.range = None
                    logger.error("reasoning_trace: hash file not updated: %s", exc)
            if self._head_stale:  # recompute from the day files next time
                self._head_stale = False
                os.pwrite(fd, _Head.invalid(), 0)
            else:
                self._save_head(fd, head)
        finally:
            self._unlock()

    def _append_locked(
        self, lock_fd: int, head: _Head, batch: Sequence[Pending], *, trusted: bool = False
    ) -> tuple[list[AppendResult], _Head]:
        results: list[AppendResult | None] = [None] * len(batch)
        if any(p.caller_id for p in batch):
            self._resolve_ids(batch, results, head.next_seq)
        seq = head.next_seq
        groups: dict[str, list[bytes]] = {}
        stored: list[tuple[int, int, int, str, bytes]] = []  # (index, seq, micros, when, line)
        clock = self._clock
        last = head.micros
        for i, pending in enumerate(batch):
            if results[i] is not None:
                continue
            micros = clock() // 1000
            if not last <= micros <= MAX_MICROS:
                micros = self._clamp(micros, last)
            elif self._behind:
                self._behind = False
            last = micros
            when = format_utc(micros)
            line = pending.compose(seq, micros, when)
            groups.setdefault(when[:10], []).append(line)
            stored.append((i, seq, micros, when, line))
            seq += 1
        if stored:
            before = head
            head = _Head(seq, *self._write_groups(groups, head), last)
            if self.tree is not None:
                lines = [(w[:10], line) for _, _, _, w, line in stored]
                self._extend_tree(before, lines, stored[-1][2], trusted)
        by_id: dict[str, Decision] = {}
        for i, s, micros, when, line in stored:
            results[i] = decision = batch[i].decision(s, micros, when, line)
            by_id[decision.id] = decision
        for i, result in enumerate(results):
            if isinstance(result, _SameBatch):
                first = by_id[result.first.id]
                same = first.content_key() == batch[i].content
                results[i] = first if same else ConflictError(first.id, first)
        return results, head  # type: ignore[return-value]

    def _clamp(self, micros: int, last: int) -> int:
        """The instant for a record when the clock reads ``micros`` and the log's newest
        instant is ``last``: never before ``last`` (time in the log never runs backwards, so
        file order stays seq order), never outside the years 1970-9999."""
        if micros > MAX_MICROS:
            if not self._behind:
                logger.warning(
                    "reasoning_trace: the clock reads past the year 9999 (%d us); records are "
                    "stamped 9999-12-31T23:59:59.999999Z until it is set right",
                    micros,
                )
                self._behind = True
            return max(last, MAX_MICROS)
        step = last - micros
        if not self._behind:
            self._behind = True
            incr("clock_steps_back")
            observe_max("clock_step_back_seconds", step / 1e6)
            logger.warning(
                "reasoning_trace: the clock is %.6f s behind the log's newest record (%s); "
                "records keep that instant until the clock catches up, so time in the log never "
                "runs backwards",
                step / 1e6,
                format_utc(last),
            )
        return max(last, 0)

    def _extend_tree(
        self, head: _Head, lines: list[tuple[str, bytes]], micros: int, trusted: bool
    ) -> None:
        """Add the batch to the tree and sign what is due. The records are already durable, so
        a failure here (all of it derived, or a checkpoint that will be retried) is logged and
        never fails the write."""
        assert self.tree is not None
        self.tree.floor_micros = micros
        try:
            self.tree.extend(
                head.next_seq,
                head.day,
                lines,
                self._lines_from,
                micros,
                self._make_durable,
                trusted=trusted,
            )
        except (OSError, ReasoningTraceError) as exc:
            self.tree.range = None
            logger.error("reasoning_trace: tree or checkpoint not updated: %s", exc)

    def _make_durable(self) -> None:
        """fsync the open day file where writes are not already (never sign what may vanish)."""
        if self.sync == "never" and self._day_fd is not None:
            os.fsync(self._day_fd[1])

    def _lines_from(self, seq: int) -> Iterator[bytes]:
        """The leaf inputs from ``seq`` on: the legacy prefix's lines as they are (parsed or
        not), then the records."""
        prefix = self.legacy_prefix()
        if seq < prefix.leaves:
            n = 0
            for day in self.days():
                for offset, _lineno, line in self.lines(day):
                    if not prefix.covers(day, offset):
                        break
                    if n >= seq:
                        yield line
                    n += 1
                if prefix.end is not None and day >= prefix.end[0]:
                    break
            seq = prefix.leaves
        yield from (d.line for d in self.read(seq))

    def _locked(self) -> tuple[int, _Head]:
        """The writer lock and the head, from a lease if this process holds one."""
        if self._lease is not None and self._lock_fd is not None:
            return self._lock_fd, self._lease
        fd = self._lock()
        try:
            return fd, self._load_head(fd)
        except BaseException:
            self._unlock()
            raise

    def _unlocked(self, fd: int, head: _Head) -> None:
        if self._lease is None:
            self._unlock()

    def with_tree(self, action: Callable[[TreeState, int], T], *, write: bool = False) -> T:
        """Run ``action(tree, size)`` with the tree caught up to the head.

        ``write`` (signing a checkpoint): under the writer lock, this store then being the
        log's writer. Otherwise a store that has not written reads: no lock, and the tree's
        hashes in the reader's cache (``action`` must not sign).
        """
        if self.tree is None:
            raise StorageError("this log keeps no tree (integrity is off)")
        if write:
            self._writer = True
        if not self._writer:
            with self._mutex:
                if self._reader_tree is None:
                    # Hashed afresh from the day files in each process, never from an earlier
                    # process's cache: a reader's proofs and roots are of the log as it is now.
                    self._scratch = tempfile.TemporaryDirectory(prefix="rtrace-tree-")
                    hashes = Path(self._scratch.name) / "hashes"
                    self._reader_tree = TreeState(self.root, hashes=hashes)
                size = self._peek_head().next_seq
                tree = self._reader_tree
                tree.sync_to(size, self._lines_from)
                return action(tree, size)
        with self._mutex:
            fd, head = self._locked()
            try:
                self._make_durable()
                self.tree.sync_to(head.next_seq, self._lines_from)
                self.tree.floor_micros = head.micros
                return action(self.tree, head.next_seq)
            finally:
                self._unlocked(fd, head)

    def _resolve_ids(
        self, batch: Sequence[Pending], results: list[AppendResult | None], next_seq: int
    ) -> None:
        """Caller-given ids already stored (or earlier in this batch) become results."""
        index = self._get_index()
        seen: dict[str, Pending] = {}
        for i, pending in enumerate(batch):
            if not pending.caller_id:
                continue
            first = seen.get(pending.id)
            if first is not None:
                # A retry inside one batch: settled once the first copy is stored.
                results[i] = _SameBatch(first)
                continue
            stored = index.find_id(pending.id, next_seq)
            if stored is None:
                seen[pending.id] = pending
            elif stored.content_key() == pending.content:
                results[i] = stored
            else:
                results[i] = ConflictError(pending.id, stored)

    def _open_day(self, day: str, head: _Head) -> tuple[int, int, int, bool]:
        """(fd, size, inode, created) to append to ``day``'s file.

        The open fd is reused while it is the head's file with the head's inode (both just
        checked against the path by ``_load_head``); otherwise the file is (re)opened, and a
        torn tail a crashed writer left in it is repaired first.
        """
        cached = self._day_fd
        if cached is not None:
            if cached[0] == day == head.day and cached[2] == head.ino:
                return cached[1], head.size, head.ino, False
            os.close(cached[1])
            self._day_fd = None
        path = self._day_s(day)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644)
            created = True
        except FileExistsError:
            fd = os.open(path, flags)
            created = False
        st = os.fstat(fd)
        size = st.st_size
        if size and not created and not _ends_with_newline(path, size):
            if self._repair_tail(day):
                os.close(fd)
                self._head_stale = True
                raise StorageError(
                    f"{path} ends with a whole record the head did not know of (its newline "
                    "was lost in a crash); the newline is restored and the head will be "
                    "recomputed: nothing was written, record again"
                )
            size = os.fstat(fd).st_size
        self._day_fd = (day, fd, st.st_ino)
        return fd, size, st.st_ino, created

    def _write_groups(self, groups: dict[str, list[bytes]], head: _Head) -> tuple[str, int, int]:
        """Write each day's lines; on any failure truncate every touched file back."""
        touched: list[tuple[int, int, str]] = []
        end = ("", 0, 0)
        day = ""
        try:
            for day, lines in groups.items():
                fd, size, ino, created = self._open_day(day, head)
                touched.append((fd, size, day))
                data = b"\n".join(lines) + b"\n"
                if self.sync == "always":
                    for line in lines:
                        _write_all(fd, line + b"\n")
                        os.fsync(fd)
                else:
                    _write_all(fd, data)
                    if self.sync == "batch":
                        os.fsync(fd)
                if created and self.sync != "never":
                    _fsync_dir(self.root)
                end = (day, size + len(data), ino)
        except OSError as exc:
            self._rollback(touched)
            raise _storage_error(f"write to {self._day_s(day)}", exc) from exc
        return end

    def _rollback(self, touched: list[tuple[int, int, str]]) -> None:
        for fd, size, day in touched:
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
            except OSError as exc:
                # The next writer will find the size mismatch and quarantine the torn bytes.
                logger.error("reasoning_trace: could not roll back %s: %s", self.day_path(day), exc)
        if self._day_fd is not None:
            os.close(self._day_fd[1])
            self._day_fd = None

    # --- reading -----------------------------------------------------------------------------

    def _lines_backward(self, path: Path) -> Iterator[tuple[int, bytes]]:
        """Complete lines of ``path`` from the last to the first, with their offsets."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            end = os.fstat(fd).st_size
            pos, carry = end, b""
            first = True
            while pos > 0:
                start = max(0, pos - 65536)
                block = os.pread(fd, pos - start, start) + carry
                pos = start
                parts = block.split(b"\n")
                if first:
                    parts.pop()  # bytes after the last newline: torn or still being written
                    first = False
                carry = parts[0] if pos > 0 else b""
                body = parts[1:] if pos > 0 else parts
                offset = pos + len(parts[0]) + 1 if pos > 0 else 0
                offsets = []
                for part in body:
                    offsets.append(offset)
                    offset += len(part) + 1
                for off, part in zip(reversed(offsets), reversed(body), strict=True):
                    if part:
                        yield off, part
        finally:
            os.close(fd)

    def lines(self, day: str, start: int = 0) -> Iterator[tuple[int, int | None, bytes]]:
        """Complete lines of ``day``'s file from byte ``start``: (offset, line number, bytes).

        Line numbers are known only when reading from the start of the file.
        """
        path = self.day_path(day)
        try:
            fh = open(path, "rb", buffering=0)  # noqa: SIM115 -- closed by the with below
        except FileNotFoundError:
            return
        with fh:
            fh.seek(start)
            offset, carry = start, b""
            lineno: int | None = 0 if start == 0 else None
            while True:
                block = fh.read(_CHUNK)
                if not block:
                    return
                parts = (carry + block).split(b"\n")
                carry = parts.pop()
                for part in parts:
                    if lineno is not None:
                        lineno += 1
                    if part:
                        yield offset, lineno, part
                    offset += len(part) + 1

    def decisions(self, day: str, start: int = 0) -> Iterator[Decision]:
        """Parsed records of one day file from byte ``start``; a corrupt line raises.

        The scan loop of every query, kept flat: read 1 MiB, split, parse, build.
        """
        prefix = self.legacy_prefix()
        if prefix.leaves and (prefix.end is None or day <= prefix.end[0]):
            yield from self._prefix_decisions(day, start, prefix)
            return
        path = self._day_s(day)
        try:
            fh = open(path, "rb", buffering=0)  # noqa: SIM115 -- closed by the with below
        except FileNotFoundError:
            return
        loads, build = orjson.loads, decision_from_dict
        with fh:
            fh.seek(start)
            offset, carry = start, b""  # offset: where ``carry + block`` starts in the file
            while block := fh.read(_CHUNK):
                data = carry + block
                parts = data.split(b"\n")
                carry = parts.pop()
                for line in parts:
                    if line:
                        try:
                            yield build(loads(line), line)
                        except ValueError as exc:
                            if is_legacy_line(line):
                                continue  # the original module's line after adoption: no seq
                            at = offset + data.index(line + b"\n")
                            raise self._corrupt(day, start, at, exc) from exc
                offset += len(data) - len(carry)

    def legacy_prefix(self) -> Prefix:
        """The lines the original module wrote before this product's first record (see
        ``legacy``); cached once a record of this product follows them."""
        if self._prefix is not None:
            return self._prefix
        days = self.days()
        # Until then (a log only the original module wrote) it can grow: read it again only
        # when a day file changed, not on every read of every day.
        shape = tuple((day, *_size_ino(self._day_s(day))) for day in days)
        if self._growing is not None and self._growing[0] == shape:
            return self._growing[1]
        prefix = find_prefix(self._root_s, days)
        if prefix.frozen():
            self._prefix, self._growing = prefix, None
        else:
            self._growing = (shape, prefix)
        return prefix

    def _prefix_decisions(self, day: str, start: int, prefix: Prefix) -> Iterator[Decision]:
        """The decisions of a day file that holds legacy prefix lines, from byte ``start``:
        legacy records with their position as seq; unparseable legacy lines are skipped (they
        are leaves, and ``verify`` notes them)."""
        seq = prefix.starts.get(day, prefix.leaves)
        for offset, _lineno, line in self.lines(day):
            if prefix.covers(day, offset):
                if offset >= start:
                    with contextlib.suppress(ValueError):
                        yield read_line(line, seq)
                seq += 1
            elif offset >= start:
                try:
                    yield decision_from_dict(orjson.loads(line), line)
                except ValueError as exc:
                    if not is_legacy_line(line):
                        raise self._corrupt(day, 0, offset, exc) from exc

    def _corrupt(self, day: str, start: int, offset: int, exc: Exception) -> CorruptLine:
        """A CorruptLine with its line number (counted only now, on the error path)."""
        lineno = None
        if start == 0:
            with open(self._day_s(day), "rb") as fh:
                lineno = fh.read(offset).count(b"\n") + 1
        return CorruptLine(self._day_s(day), offset, str(exc), lineno)

    def recent(
        self, limit: int, on_corrupt: Callable[[CorruptLine], None] | None = None
    ) -> list[Decision]:
        """The newest ``limit`` decisions, oldest first, reading day files from their ends.

        A corrupt line raises ``CorruptLine``, or is passed to ``on_corrupt`` and skipped.
        """
        out: list[Decision] = []
        if limit <= 0:
            return out
        prefix = self.legacy_prefix()
        for day in reversed(self.days()):
            path = self.day_path(day)
            if prefix.leaves and (prefix.end is None or day <= prefix.end[0]):
                found = list(self.decisions(day))
                out.extend(reversed(found[-(limit - len(out)) :]))
                if len(out) >= limit:
                    break
                continue
            for offset, line in self._lines_backward(path):
                try:
                    out.append(parse_record(line, file=str(path), offset=offset))
                except CorruptLine as exc:
                    if is_legacy_line(line):
                        continue
                    if on_corrupt is None:
                        raise
                    on_corrupt(exc)
                    continue
                if len(out) >= limit:
                    break
            if len(out) >= limit:
                break
        out.sort(key=lambda d: d.seq)
        return out

    def read(self, start: int = 0, stop: int | None = None) -> Iterator[Decision]:
        """Decisions with ``start <= seq < stop`` in seq order, starting at the located record."""
        if stop is not None and stop <= start:
            return
        days = self.days()
        begin_day, begin_off = (days[0], 0) if days else (None, 0)
        if start > 0 and days:
            try:
                loc = self._get_index().locate(start - 1)
            except StorageError as exc:  # derived: read from the start instead
                logger.warning("reasoning_trace: index unusable (%s); reading day files", exc)
                loc = None
            if loc is not None:
                begin_day, begin_off = loc[0], loc[1] + loc[2] + 1
        for day in days:
            if begin_day is not None and day < begin_day:
                continue
            for d in self.decisions(day, begin_off if day == begin_day else 0):
                if d.seq < start:
                    continue
                if stop is not None and d.seq >= stop:
                    return
                yield d

    def scan(self, since_us: int | None, until_us: int | None) -> Iterator[Decision]:
        """All decisions of the day files that overlap ``[since_us, until_us)``."""
        lo = _day_of(since_us) if since_us is not None else None
        hi = _day_of(until_us - 1) if until_us is not None else None
        days = [
            day for day in self.days() if (lo is None or day >= lo) and (hi is None or day <= hi)
        ]
        return itertools.chain.from_iterable(map(self.decisions, days))

    def get(self, key: int | str) -> Decision:
        """One decision by seq (int) or id (str), via the derived index."""
        index = self._get_index()
        found = index.find_seq(key) if isinstance(key, int) else index.find_id(key)
        if found is None:
            what = f"seq {key}" if isinstance(key, int) else f"id {key!r}"
            raise NotFound(f"no decision with {what} in {self.root}")
        return found

    def follow(self, after_seq: int | None, stop: Callable[[], bool]) -> Iterator[Decision]:
        """Poll the newest day file (and new ones) for complete lines other writers append."""
        from .follow import follow_files

        return follow_files(self, after_seq, stop)

    def index_stats(self, flt: Filter) -> dict[str, list[tuple[Any, ...]]]:
        """The aggregates the derived index keeps for ``flt`` (see ``Index.stats``)."""
        return self._get_index().stats(flt)

    def _get_index(self) -> Index:
        if self._index is None:
            self._index = Index(self, self._derived_path("index.sqlite"))
        return self._index

    def close(self) -> None:
        """Sign a final checkpoint (clean close), release the lock, files and index."""
        self.release()
        if (
            self.tree is not None
            and self._writer
            and not self._closed
            and os.path.isdir(self._root_s)
        ):
            try:
                micros = self._clock() // 1000
                self.with_tree(lambda tree, size: tree.sign_current(micros, automatic=True))
            except (OSError, ReasoningTraceError) as exc:
                logger.error("reasoning_trace: no checkpoint on close: %s", exc)
        self._closed = True
        with self._mutex:
            if self._day_fd is not None:
                os.close(self._day_fd[1])
                self._day_fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            if self._root_fd is not None:
                os.close(self._root_fd)
                self._root_fd = None
            if self._index is not None:
                self._index.close()
                self._index = None
            if self.tree is not None:
                self.tree.close()
            if self._reader_tree is not None:
                self._reader_tree.close()
                self._reader_tree = None
            if self._scratch is not None:
                self._scratch.cleanup()
                self._scratch = None


class _SameBatch(ReasoningTraceError):
    """Placeholder for a duplicate of a caller id that appears earlier in the same batch."""

    def __init__(self, first: Pending) -> None:
        super().__init__(first.id)
        self.first = first


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n == 0:
            raise OSError(errno.EIO, "write returned 0")
        view = view[n:]


#: How the original module's lines begin (``json.dumps(sort_keys=True)``: "action" first).
_SEED_START = b'{"action": '
#: How long a writer waits for the original module to finish a line it is writing.
ORIGINAL_LINE_WAIT = 2.0


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


def _size_ino(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (-1, 0)
    return (st.st_size, st.st_ino)


def _write_all_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n == 0:
            raise OSError(errno.EIO, "write returned 0")
        offset += n
        view = view[n:]


def _ends_with_newline(path: str, size: int) -> bool:
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        return fh.read(1) == b"\n"


def _day_start(day: str) -> int:
    """The first instant of a UTC day ``YYYY-MM-DD``, in Unix microseconds. The original
    module's own timestamps are not trusted as a floor (one bad clock reading would stamp
    every later record); the day of the file that holds them keeps file order all the same."""
    return parse_utc(f"{day}T00:00:00.000000Z")


def _instant(record: Decision) -> int:
    """A record's instant in Unix microseconds (from ``datetime_utc``, else ``timestamp``)."""
    try:
        return parse_utc(record.datetime_utc)
    except ValueError:
        return int(record.timestamp * 1_000_000)


def _day_of(micros: int) -> str:
    t = time.gmtime(micros // 1_000_000)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
