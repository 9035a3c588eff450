"""The file store: a log as day files of JSON lines under one root (SPEC sections 2 and 3).

Writers on one host, in any number of threads and processes, serialise on the writer lock
(``writer_lock``); the ``seq`` and the instant of each record are taken under it, so the day
file and the timestamp come from the same clock reading. The head (``head``) is cached in the
lock file and trusted only when the day file's inode and size still match; otherwise it is
recomputed from the tails of the day files (``recovery``), repairing torn tails on the way.
Opening a log and appending to it therefore never scan it. The lines are written by
``day_writer`` (whole batches or nothing), read by ``day_files``, indexed by ``index``, and
hashed into the tree that signs checkpoints (``signed_tree``) before the lock is let go.
Under ``sync="batch"`` the batch's ``fsync`` comes after the lock is let go, shared with the
other processes that appended meanwhile (``WriterLock.share_sync``); a checkpoint due in the
batch is signed only after the records are synced, under the lock.

A store that only reads never writes: no lock, its index in the per-user cache and its tree
hashes in a private temporary directory. It becomes the log's writer when it first appends
or signs; a writer signs a final checkpoint on ``close``.

Longer than 400 lines because the append path (lock, head, write, tree, lease) is one
transaction under the writer lock: its invariants (no seq consumed by a refused batch, the
head saved only after the write, the tree extended before the lock is let go) are easier to
check in one place than across modules.
Tests: ``tests/test_files.py``, ``tests/test_processes.py`` (SIGKILL rounds, many writers),
``tests/test_faults.py``, ``tests/test_store_contract.py``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .checkpoint import Checkpoints
from .day_files import DayFiles
from .day_writer import SYNC_MODES, DayWriter, Sync, Unsynced, storage_error, sync_data
from .errors import (
    ConflictError,
    CorruptLine,
    LogRootMissing,
    NotFound,
    ReasoningTraceError,
    StorageError,
    UsageError,
)
from .head import Head, Instants
from .index import Index
from .layout import Layout, fsync_dir, reader_cache
from .query import EVERY, Filter, Page, Stats
from .record import MAX_MICROS, Decision, Pending, format_utc
from .recovery import load_head, peek_head, taken_in
from .signed_tree import SignedTree
from .store import AppendResult
from .writer_lock import WriterLock

__all__ = ["LEASE_SECONDS", "FileStore", "Sync", "resolve_sync"]

logger = logging.getLogger("reasoning_trace")

#: Longest a busy process keeps the writer lock across consecutive batches.
LEASE_SECONDS = 0.005


def resolve_sync(sync: str | None) -> Sync:
    """The durability mode: the argument, else ``$REASONING_TRACE_SYNC``, else ``batch``.

    Raises ``UsageError`` for anything but ``batch``, ``always`` or ``never``.
    """
    value = sync or os.environ.get("REASONING_TRACE_SYNC") or "batch"
    if value not in SYNC_MODES:
        raise UsageError(f"sync must be one of {', '.join(SYNC_MODES)}, not {value!r}")
    return value


class FileStore:
    """Day files under one root directory; see the module docstring.

    Honours ``store.Store``, ``store.IndexedStore`` and ``store.TreeStore`` (with ``tree``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        sync: Sync = "batch",
        create: bool = True,
        clock: Callable[[], int] = time.time_ns,
        tree: Callable[[Path], SignedTree] | None = None,
    ) -> None:
        self.root = Path(os.path.abspath(root))
        self._clock = clock
        if not self.root.is_dir():
            if not create:
                raise LogRootMissing(f"log root {self.root} does not exist")
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                fsync_dir(self.root.parent)
            except OSError as exc:
                raise storage_error(f"create the log root {self.root}", exc) from exc
        self.layout = Layout(self.root)
        self.checkpoints = Checkpoints(self.root)
        self.files = DayFiles(self.layout)
        self._writer_lock = WriterLock(self.layout)
        self._out = DayWriter(self.files, sync)
        self._out.defer = sync == "batch"  # synced after the lock is let go (share_sync)
        self._lease: Head | None = None  # head while the lock is kept between batches
        self._lease_start = 0.0
        self._saved_head: bytes | None = None  # the head this store saved last, as written
        self._mutex = threading.Lock()  # one writer thread of this store at a time
        self._index: Index | None = None
        self._closed = False
        self._instants = Instants()  # time in the log never runs backwards
        self._ready = False  # the signing key was checked (before the first append)
        self._taken: list[Pending] = []  # the original module's lines, to record again
        self._writer = False  # this store appended (or signed): the log's writer
        self._cache: Path | None = None  # a reader's derived state (index, hashes)
        self._reader_tree: SignedTree | None = None
        self._scratch: tempfile.TemporaryDirectory[str] | None = None  # the reader's tree hashes
        self.tree = tree(self.root) if tree is not None else None

    @property
    def sync(self) -> Sync:
        """The durability mode (SPEC section 3): ``batch``, ``always`` or ``never``."""
        return self._out.sync

    # --- the day files, as ``day_files`` reads them -----------------------------------------

    def days(self) -> list[str]:
        """The days that have a day file, oldest first."""
        return self.layout.days()

    def lines(self, day: str, start: int = 0) -> Iterator[tuple[int, int | None, bytes]]:
        """Complete lines of ``day``'s file from byte ``start`` (``DayFiles.lines``)."""
        return self.files.lines(day, start)

    # --- the head ----------------------------------------------------------------------------

    def _load_head(self, lock_fd: int, *, take_in: bool = False) -> Head:
        """The head under the writer lock (``recovery.load_head``); with ``take_in`` the
        original module's lines found after this product's records are queued to be recorded
        again by the append under way."""
        cached = self._writer_lock.read_head(lock_fd)
        own = cached is not None and cached.encode() == self._saved_head
        head, foreign = load_head(self.files, cached, take_in=take_in, own=own)
        if cached is None or (cached.next_seq, cached.day, cached.size, cached.ino) != (
            head.next_seq,
            head.day,
            head.size,
            head.ino,
        ):
            self._writer_lock.forget_synced(lock_fd)
        if take_in and foreign:
            self._taken.extend(taken_in(foreign))
        return head

    def _peek_head(self) -> Head:
        """The head as a reader sees it (``recovery.peek_head``): no lock, no repair."""
        return peek_head(self.files, self._writer_lock.peek())

    def size(self) -> int:
        """The number of records (next seq), from the validated head."""
        with self._mutex:
            if self._lease is not None:
                return self._lease.next_seq
            if not self._writer:
                return self._peek_head().next_seq
            fd = self._writer_lock.acquire()
            try:
                return self._load_head(fd).next_seq
            finally:
                self._writer_lock.release()

    # --- appending ---------------------------------------------------------------------------

    def append(self, batch: Sequence[Pending], *, keep_lock: bool = False) -> list[AppendResult]:
        """Store ``batch`` under the writer lock; see ``Store.append``.

        ``keep_lock`` says more records are already queued in this process: the writer lock is
        then kept for the next batch (a lease of at most ``LEASE_SECONDS``), which then skips
        re-locking and re-validating the head. ``release`` ends the lease.
        """
        if self._closed:
            raise StorageError("the log is closed")
        if not self._ready and self.tree is not None:
            try:
                self.tree.ready()  # a log never records while it cannot sign
            except StorageError:
                raise
            except OSError as exc:  # e.g. no room to publish the verifier key
                raise storage_error(f"prepare to sign {self.root}", exc) from exc
        self._ready = self._writer = True
        lock = self._writer_lock
        with self._mutex:
            lease = self._lease
            if lease is None:
                try:
                    fd = lock.acquire()
                    head = self._load_head(fd, take_in=True)
                except StorageError:
                    lock.release()
                    raise
                except OSError as exc:
                    lock.release()
                    raise storage_error(f"take the writer lock of {self.root}", exc) from exc
                self._lease_start = time.monotonic()
            else:
                fd, head = lock.fd, lease  # type: ignore[assignment]
                if self._out.kept_size(lease.day) != lease.size:
                    # Something that takes no lock (the original module) appended meanwhile.
                    lock.write_head(fd, lease)
                    head = self._load_head(fd, take_in=True)
                    lease = None
            self._lease = None
            try:
                if self._taken:  # the original module's lines first, in their order
                    taken, self._taken = self._taken, []
                    head = self._append_locked(head, taken)[1]
                results, head = self._append_locked(head, batch, trusted=lease is not None)
            except (CorruptLine, StorageError):
                self._abandon(fd, head)
                raise
            except OSError as exc:
                self._abandon(fd, head)
                raise storage_error(f"append to {self.root}", exc) from exc
            except BaseException:
                self._abandon(fd, head)  # never keep other writers waiting on a failure
                raise
            if keep_lock and time.monotonic() - self._lease_start < LEASE_SECONDS:
                self._lease = head
            else:
                self._end_lease(fd, head)
            unsynced = self._out.take_unsynced()
            if unsynced is not None:
                self._sync_shared(unsynced)
            return results

    def _abandon(self, fd: int, head: Head) -> None:
        """End the lease after a failed batch (nothing of it is acknowledged, so unsynced)."""
        self._out.take_unsynced()
        self._end_lease(fd, head)

    def _sync_shared(self, unsynced: Unsynced) -> None:
        """Make a batch durable after the writer lock (unless leased) was let go, sharing the
        ``fsync`` with other processes (``WriterLock.share_sync``).

        When the sync fails, the batch is cut from the day file if nothing was written after
        it (as a failed write is), and ``StorageError`` is raised either way.
        """
        u = unsynced
        try:
            self._writer_lock.share_sync(u.fd, u.day, u.ino, u.end, sync_data)
            return
        except OSError as exc:
            failure = exc
        lock, cut = self._writer_lock, False
        if self._lease is not None and lock.fd is not None:
            head, self._lease = self._lease, None
            self._end_lease(lock.fd, head)
        try:
            fd = lock.acquire()
            try:
                head = self._load_head(fd)
                if (head.day, head.ino, head.size) == (u.day, u.ino, u.end):
                    os.ftruncate(u.fd, u.start)
                    os.fsync(u.fd)
                    lock.invalidate(fd)  # the next writer recomputes the head
                    lock.forget_synced(fd)  # the offsets may name the bytes just cut
                    self._saved_head = None
                    if self.tree is not None:
                        self.tree.forget()
                    cut = True
            finally:
                lock.release()
        except (OSError, StorageError) as exc:
            logger.error("reasoning_trace: could not cut an unsynced batch: %s", exc)
        self._out.close()
        what = self.layout.day_file_s(u.day)
        if cut:
            raise storage_error(f"make the batch durable in {what}; nothing was kept", failure)
        raise storage_error(
            f"make the batch durable in {what}; other writers appended after it, so its "
            "records stay in the file but may not survive a power loss",
            failure,
        )

    def release(self) -> None:
        """End a lease ``append(keep_lock=True)`` left: save the head, unlock."""
        with self._mutex:
            if self._lease is not None and self._writer_lock.fd is not None:
                head, self._lease = self._lease, None
                self._end_lease(self._writer_lock.fd, head)

    def _end_lease(self, fd: int, head: Head) -> None:
        try:
            if self.tree is not None:
                try:
                    self.tree.flush()
                except OSError as exc:  # derived: the next writer catches the file up
                    self.tree.forget()
                    logger.error("reasoning_trace: hash file not updated: %s", exc)
            self._saved_head = None
            if self._out.take_head_stale():  # recompute from the day files next time
                self._writer_lock.invalidate(fd)
            else:
                self._writer_lock.write_head(fd, head)
                self._saved_head = head.encode()
        finally:
            self._writer_lock.release()

    def _append_locked(
        self, head: Head, batch: Sequence[Pending], *, trusted: bool = False
    ) -> tuple[list[AppendResult], Head]:
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
                micros = self._instants.clamp(micros, last)
            elif self._instants.behind:
                self._instants.behind = False
            last = micros
            when = format_utc(micros)
            line = pending.compose(seq, micros, when)
            groups.setdefault(when[:10], []).append(line)
            stored.append((i, seq, micros, when, line))
            seq += 1
        if stored:
            before = head
            head = Head(seq, *self._out.write(groups, head), last)
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

    def _extend_tree(
        self, head: Head, lines: list[tuple[str, bytes]], micros: int, trusted: bool
    ) -> None:
        """Add the batch to the tree and sign what is due. The records are already durable, so
        a failure here (all of it derived, or a checkpoint that will be retried) is logged and
        never fails the write."""
        assert self.tree is not None
        try:
            self.tree.extend(
                head.next_seq,
                head.day,
                lines,
                self._leaves_from,
                micros,
                self._out.make_durable,
                trusted=trusted,
            )
        except (OSError, ReasoningTraceError, IndexError) as exc:  # IndexError: a hash the
            # derived hash file lost under this writer
            self.tree.forget()
            logger.error("reasoning_trace: tree or checkpoint not updated: %s", exc)

    def _leaves_from(self, seq: int) -> Iterator[bytes]:
        return self.files.leaves_from(seq, self._locate)

    def _resolve_ids(
        self, batch: Sequence[Pending], results: list[AppendResult | None], next_seq: int
    ) -> None:
        """Caller-given ids already stored (or earlier in this batch) become results."""
        index = self.index()
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

    # --- the tree (``store.TreeStore``) ------------------------------------------------------

    @contextlib.contextmanager
    def signed_tree(self, *, write: bool = False) -> Iterator[SignedTree]:
        """The log's tree caught up to the head, for proofs and roots (and, with ``write``,
        signing: under the writer lock, this store then being the log's writer).

        Otherwise a store that has not written reads: no lock, and the tree's hashes in a
        private temporary directory (such a tree never signs). Raises ``StorageError`` when
        the log keeps no tree (``integrity=False``).
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
                    self._reader_tree = SignedTree(self.root, hashes=hashes, signs=False)
                self._reader_tree.sync_to(self._peek_head().next_seq, self._leaves_from)
                yield self._reader_tree
            return
        with self._mutex:
            lock = self._writer_lock
            if self._lease is not None and lock.fd is not None:
                head, locked = self._lease, False
            else:
                fd = lock.acquire()
                try:
                    head = self._load_head(fd)
                except BaseException:
                    lock.release()
                    raise
                locked = True
            try:
                self._out.make_durable()
                self.tree.sync_to(head.next_seq, self._leaves_from, floor_micros=head.micros)
                yield self.tree
            finally:
                if locked:
                    lock.release()

    # --- reading (``store.Store``, ``store.IndexedStore``) -----------------------------------

    def recent(
        self, limit: int, on_corrupt: Callable[[CorruptLine], None] | None = None
    ) -> list[Decision]:
        """The newest ``limit`` decisions, oldest first (``DayFiles.recent``)."""
        return self.files.recent(limit, on_corrupt)

    def read(self, start: int = 0, stop: int | None = None) -> Iterator[Decision]:
        """Decisions with ``start <= seq < stop`` in seq order, starting at the located record."""
        return self.files.read(start, stop, self._locate)

    def _locate(self, seq: int) -> tuple[str, int, int] | None:
        try:
            return self.index().locate(seq)
        except StorageError as exc:  # derived: read from the start instead
            logger.warning("reasoning_trace: index unusable (%s); reading day files", exc)
            return None

    def scan(self, since_us: int | None, until_us: int | None) -> Iterator[Decision]:
        """All decisions of the day files that overlap ``[since_us, until_us)``."""
        return self.files.scan(since_us, until_us)

    def get(self, key: int | str) -> Decision:
        """One decision by seq (int) or id (str), via the derived index; where a corrupt line
        stops the index, read at its place (``DayFiles.find_at_place``) or the corrupt line
        raised."""
        what = f"seq {key}" if isinstance(key, int) else f"id {key!r}"
        try:
            index = self.index()
            found = index.find_seq(key) if isinstance(key, int) else index.find_id(key)
        except CorruptLine as exc:
            found = self.files.find_at_place(key)
            if found is None:
                problem = f"{exc.problem}; no intact decision with {what} found past it"
                raise CorruptLine(exc.file, exc.offset, problem, exc.line) from exc
        if found is None:
            raise NotFound(f"no decision with {what} in {self.root}")
        return found

    def follow(self, after_seq: int | None, stop: Callable[[], bool]) -> Iterator[Decision]:
        """Poll the newest day file (and new ones) for complete lines other writers append."""
        from .follow import follow_files

        return follow_files(self.files, self.index().locate, after_seq, stop)

    def select(self, flt: Filter, page: Page = EVERY) -> list[Decision]:
        """The decisions ``flt`` matches, through the index (``Index.select``)."""
        return self.index().select(flt, page)

    def select_lines(self, flt: Filter, page: Page = EVERY) -> list[bytes] | None:
        """The stored lines ``flt`` matches when the index decides it exactly, else ``None``."""
        return self.index().select_lines(flt, page)

    def index_stats(self, flt: Filter) -> dict[str, list[tuple[Any, ...]]]:
        """The aggregates the derived index keeps for ``flt`` (see ``Index.stats``)."""
        return self.index().stats(flt)

    def exact_stats(self, flt: Filter) -> Stats | None:
        """``Index.exact_stats`` (``None`` also when the index is unusable: read instead)."""
        try:
            return self.index().exact_stats(flt)
        except StorageError as exc:
            logger.warning("reasoning_trace: index unusable (%s); reading day files", exc)
            return None

    def index(self) -> Index:
        """The derived index: under ``.rtrace/`` for a writer, in the per-user cache for a
        reader (reading never writes under the root)."""
        if self._index is None:
            if self._writer:
                path = self.layout.index
            else:
                if self._cache is None:
                    self._cache = reader_cache(self.root)
                path = self._cache / self.layout.index.name
            self._index = Index(self.files, path)
        return self._index

    def close(self) -> None:
        """Sign a final checkpoint (clean close), release the lock, files and index."""
        self.release()
        if self.tree is not None and self._writer and not self._closed and self.root.is_dir():
            try:
                micros = self._clock() // 1000
                with self.signed_tree(write=True) as tree:
                    tree.sign_current(micros, automatic=True)
            except (OSError, ReasoningTraceError, IndexError) as exc:
                logger.error("reasoning_trace: no checkpoint on close: %s", exc)
        self._closed = True
        with self._mutex:
            self._out.close()
            self._writer_lock.close()
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
