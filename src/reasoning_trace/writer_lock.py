"""The writer lock of one log root, shared by every thread and process that writes it.

The lock is an ``flock`` of the root directory itself, not of a file under ``.rtrace/``:
deleting the derived directory (documented as safe, SPEC section 2) while writers run can then
never let two of them hold "the" lock at once. The head file ``.rtrace/lock`` (``layout``) is
only a cache of the head (``head.Head``), re-created when it was deleted or replaced.

The head file also lets processes share a group commit (SPEC section 3, ``sync="batch"``).
After the head, two slots name a day file (day, inode) and an offset: *written*, saved with
the head under the writer lock once a batch's bytes are whole in the file, and *durable*,
published only after an ``fsync`` that started once those bytes were written has returned.
A writer lets the writer lock go before its ``fsync`` (``share_sync``), so other processes
append meanwhile; each then takes the *sync lock* (an ``flock`` of the head file) and skips
its own ``fsync`` when *durable* already covers its bytes. Otherwise it reads *written*
(bytes up to there are whole, so the ``fsync`` it starts now covers them too), syncs and
publishes. Bytes below *written* are never cut (only a torn tail past every whole batch is), so
a published offset stays true; a process killed mid-``fsync`` publishes nothing and its
``flock`` goes with it. Lock order: the writer lock, then the sync lock, never the reverse.
Tests: ``tests/test_processes.py`` (many writers), ``tests/test_faults.py`` (``.rtrace``
deleted under writers).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import zlib
from collections.abc import Callable

from .errors import LogRootMissing
from .head import HEAD_BYTES, Head
from .layout import Layout, open_derived

__all__ = ["SLOT_BYTES", "WriterLock"]

logger = logging.getLogger("reasoning_trace")

#: The size of each slot after the head in ``.rtrace/lock``: one line, padded with spaces.
SLOT_BYTES = 64
_WRITTEN_AT = HEAD_BYTES
_DURABLE_AT = HEAD_BYTES + SLOT_BYTES


def _slot(day: str | None, ino: int, offset: int) -> bytes:
    """``<day> <inode> <offset> <crc32>\n`` padded to ``SLOT_BYTES`` (blank without a day)."""
    if day is None:
        return b" " * SLOT_BYTES
    body = f"{day} {ino} {offset}"
    return f"{body} {zlib.crc32(body.encode()):08x}\n".encode().ljust(SLOT_BYTES, b" ")


def _unslot(raw: bytes) -> tuple[str, int, int] | None:
    """(day, inode, offset) of a slot ``_slot`` wrote whole, else ``None`` (nothing known)."""
    parts = raw.split()
    if len(parts) != 4:
        return None
    body = b" ".join(parts[:3])
    try:
        if int(parts[3], 16) != zlib.crc32(body):
            return None
        return parts[0].decode(), int(parts[1]), int(parts[2])
    except (ValueError, UnicodeDecodeError):
        return None


class WriterLock:
    """The cross-process writer lock of the log laid out as ``layout``, and its head file.

    Not thread-safe by itself: the file store serialises its threads first.
    """

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._head_s = str(layout.head_file)
        self._derived = str(layout.derived)
        self.fd: int | None = None  # the head file (.rtrace/lock), a cache
        self._head_ino = 0
        self._root_fd: int | None = None  # the root directory, flocked
        self._root_ino = 0
        self._known: dict[bytes, tuple[str, int, int]] = {}  # slots this lock wrote, parsed

    def acquire(self) -> int:
        """Take the lock (blocking); return the fd of the head file.

        Raises ``LogRootMissing`` when the root was removed while the log was open.
        """
        while True:
            if self._root_fd is None:
                try:
                    fd = os.open(self.layout.root_s, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                except FileNotFoundError as exc:
                    raise LogRootMissing(
                        f"log root {self.layout.root} was removed while the log was open; "
                        "nothing was written (restore or recreate it to continue)"
                    ) from exc
                self._root_fd, self._root_ino = fd, os.fstat(fd).st_ino
            fcntl.flock(self._root_fd, fcntl.LOCK_EX)
            try:
                same = os.stat(self.layout.root_s).st_ino == self._root_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            # The root was removed or replaced: lock the directory now at that path.
            fcntl.flock(self._root_fd, fcntl.LOCK_UN)
            os.close(self._root_fd)
            self._root_fd = None
        try:
            if self.fd is not None and os.stat(self._head_s).st_ino == self._head_ino:
                return self.fd
        except FileNotFoundError:
            pass
        if self.fd is not None:  # the head file was deleted or replaced
            os.close(self.fd)
            self.fd = None
        try:
            for attempt in itertools.count():
                with contextlib.suppress(FileExistsError):
                    os.mkdir(self._derived)
                try:
                    fd = open_derived(self._head_s, os.O_RDWR | os.O_CREAT)
                    break
                except FileNotFoundError:
                    if attempt >= 100:  # .rtrace/ deleted again between mkdir and open
                        raise
        except BaseException:
            fcntl.flock(self._root_fd, fcntl.LOCK_UN)
            raise
        self.fd, self._head_ino = fd, os.fstat(fd).st_ino
        return fd

    def release(self) -> None:
        """Let the lock go (the head file stays open for the next ``acquire``)."""
        if self._root_fd is not None:
            fcntl.flock(self._root_fd, fcntl.LOCK_UN)

    def read_head(self, fd: int) -> Head | None:
        """The head cached in the head file (``None``: none, or not one ``Head`` wrote)."""
        return Head.decode(os.pread(fd, HEAD_BYTES, 0))

    def write_head(self, fd: int, head: Head) -> None:
        """Cache ``head`` (under the lock), and with it the *written* slot: every byte of its
        day file before ``head.size`` is part of a whole, written batch."""
        slot = _slot(head.day, head.ino, head.size)
        os.pwrite(fd, head.encode() + slot, 0)
        if head.day is not None:
            self._remember(slot, (head.day, head.ino, head.size))

    def _remember(self, slot: bytes, value: tuple[str, int, int]) -> None:
        if len(self._known) > 4:
            self._known.clear()
        self._known[slot] = value

    def _read_slot(self, raw: bytes) -> tuple[str, int, int] | None:
        """A slot's value: one this lock wrote is known, anything else is parsed."""
        known = self._known.get(raw)
        return known if known is not None else _unslot(raw)

    def share_sync(
        self, fd: int, day: str, ino: int, end: int, sync: Callable[[int], None]
    ) -> bool:
        """Make the first ``end`` bytes of the day file ``day`` (inode ``ino``, open as ``fd``)
        durable with ``sync``, unless another process's ``fsync`` already did; see the module
        docstring. Returns whether this call synced.

        Call it holding the writer lock or not, after the bytes are whole in the file (and,
        when not holding it, after ``write_head`` saved them). Raises ``OSError`` when
        ``sync`` fails; a failure of the head file only costs the sharing.
        """
        lock_fd = self.fd
        if lock_fd is None:
            sync(fd)
            return True
        try:
            if not self._take_sync_lock(lock_fd, day, ino, end):
                return False
        except OSError as exc:
            logger.debug("reasoning_trace: sync lock not taken (%s); syncing alone", exc)
            sync(fd)
            return True
        try:
            raw = os.pread(lock_fd, 2 * SLOT_BYTES, _WRITTEN_AT)
            if self._covers(raw[SLOT_BYTES:], day, ino, end):
                return False
            written = self._read_slot(raw[:SLOT_BYTES])
            upto = end
            if written is not None and written[:2] == (day, ino) and written[2] > end:
                # Whole before this fsync starts, so covered by it (never past the file's end).
                upto = min(written[2], os.fstat(fd).st_size)
            sync(fd)
            try:
                slot = _slot(day, ino, upto)
                os.pwrite(lock_fd, slot, _DURABLE_AT)
                self._remember(slot, (day, ino, upto))
            except OSError as exc:  # durable all the same; others just sync for themselves
                logger.debug("reasoning_trace: durable offset not published (%s)", exc)
            return True
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)

    def forget_synced(self, fd: int) -> None:
        """Blank the *written* and *durable* slots (under the writer lock), when the head had
        to be recomputed: a day file may be shorter than they say (a power loss took an
        unsynced tail, or a file was restored), and nothing may be skipped on their word."""
        self._known.clear()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                os.pwrite(fd, b" " * (2 * SLOT_BYTES), _WRITTEN_AT)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            logger.error("reasoning_trace: could not reset the durable offset: %s", exc)

    def _covers(self, raw: bytes, day: str, ino: int, end: int) -> bool:
        durable = self._read_slot(raw)
        return durable is not None and durable[:2] == (day, ino) and durable[2] >= end

    def _take_sync_lock(self, lock_fd: int, day: str, ino: int, end: int) -> bool:
        """Take the sync lock, or return ``False`` (not holding it) once a sync another
        process was running when asked covered the bytes. Such a waiter waits on a shared
        lock, so all of them wake when that sync ends, not behind the next one."""
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        fcntl.flock(lock_fd, fcntl.LOCK_SH)  # the durable slot is only written under LOCK_EX
        try:
            covered = self._covers(os.pread(lock_fd, SLOT_BYTES, _DURABLE_AT), day, ino, end)
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
        if covered:
            return False
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        return True

    def invalidate(self, fd: int) -> None:
        """Make the next writer recompute the head from the day files."""
        os.pwrite(fd, Head.invalid(), 0)

    def peek(self) -> Head | None:
        """The cached head as a reader sees it: without the lock, without creating anything."""
        try:
            fd = os.open(self._head_s, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            return Head.decode(os.pread(fd, HEAD_BYTES, 0))
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the head file and the root directory (the lock goes with them)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self._root_fd is not None:
            os.close(self._root_fd)
            self._root_fd = None
