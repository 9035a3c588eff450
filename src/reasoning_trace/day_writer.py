"""Appending a batch's lines to the day files, whole or not at all (SPEC sections 2 and 3).

Under the writer lock, each day's lines are written with one ``write`` and made durable as the
log's ``sync`` mode says: ``batch`` one ``fsync`` per batch and day file, ``always`` one per
record, ``never`` none (the OS decides). A new day file's directory entry is made durable too.
Under ``batch`` the last day file of a batch may be left *unsynced* (``defer``): the file store
then lets the writer lock go and syncs it with ``WriterLock.share_sync``, sharing the ``fsync``
with other processes. An appended file needs only ``fdatasync`` (it flushes the size the new
bytes need to be read back; SQLite relies on the same).
Any failure cuts every touched file back to its size before the batch (``ftruncate``), so a
refused or failed batch leaves no partial line and consumes no seq. The newest day file stays
open between batches while it is the head's file with the head's inode.
Tests: ``tests/test_files.py``, ``tests/test_faults.py`` (a full tmpfs),
``tests/test_processes.py`` (SIGKILL rounds).
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Literal

from .day_files import DayFiles
from .errors import StorageError
from .head import Head
from .layout import fsync_dir
from .recovery import repair_tail

__all__ = ["SYNC_MODES", "DayWriter", "Sync", "Unsynced", "storage_error", "sync_data"]

logger = logging.getLogger("reasoning_trace")

Sync = Literal["batch", "always", "never"]
SYNC_MODES: tuple[Sync, ...] = ("batch", "always", "never")


#: ``fdatasync`` where the platform has it (Linux), else ``fsync``.
sync_data = getattr(os, "fdatasync", os.fsync)


class Unsynced:
    """A batch's bytes written but not yet synced: ``[start, end)`` of ``day``'s file."""

    __slots__ = ("day", "end", "fd", "ino", "start")

    def __init__(self, day: str, fd: int, ino: int, start: int, end: int) -> None:
        self.day, self.fd, self.ino, self.start, self.end = day, fd, ino, start, end


def storage_error(action: str, exc: OSError) -> StorageError:
    """A ``StorageError`` saying what could not be done, why, and on which file."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    where = f" ({exc.filename})" if exc.filename else ""
    return StorageError(f"could not {action}: {reason}{where}", exc.errno or 0)


class DayWriter:
    """Writes lines to the day files of ``files`` (under the writer lock, one thread at once)."""

    def __init__(self, files: DayFiles, sync: Sync) -> None:
        self.files = files
        self.layout = files.layout
        self.sync: Sync = sync
        self.open: tuple[str, int, int] | None = None  # (day, fd, inode) kept open
        #: A lost newline was restored: the head must be recomputed from the day files.
        self.head_stale = False
        #: Under ``batch``, leave the last day file of a batch unsynced (``take_unsynced``).
        self.defer = False
        self.unsynced: Unsynced | None = None

    def take_unsynced(self) -> Unsynced | None:
        """The bytes the last ``write`` left unsynced (``defer``), now the caller's to sync."""
        unsynced, self.unsynced = self.unsynced, None
        return unsynced

    def take_head_stale(self) -> bool:
        """Whether a lost newline was restored since last asked (the head must then be
        recomputed from the day files)."""
        stale, self.head_stale = self.head_stale, False
        return stale

    def kept_size(self, day: str | None) -> int | None:
        """The size of the open day file if it is ``day``'s, else ``None``."""
        if self.open is None or self.open[0] != day:
            return None
        return os.fstat(self.open[1]).st_size

    def make_durable(self) -> None:
        """fsync the open day file where writes are not already (never sign what may vanish)."""
        if self.unsynced is not None:
            sync_data(self.unsynced.fd)
            self.unsynced = None
        elif self.sync == "never" and self.open is not None:
            os.fsync(self.open[1])

    def write(self, groups: dict[str, list[bytes]], head: Head) -> tuple[str, int, int]:
        """Write each day's lines; return (day, size, inode) of the last file written (the size
        before this batch if another program appended to it meanwhile). On any
        failure, truncate every touched file back and raise ``StorageError`` (with
        ``head_stale`` set when a lost newline was restored instead)."""
        touched: list[tuple[int, int, str]] = []
        end = ("", 0, 0)
        day = ""
        self.unsynced = None
        last = len(groups) - 1
        try:
            for n, (day, lines) in enumerate(groups.items()):
                fd, size, ino, created = self._open_day(day, head)
                touched.append((fd, size, day))
                data = b"\n".join(lines) + b"\n"
                if self.sync == "always":
                    for line in lines:
                        _write_all(fd, line + b"\n")
                        os.fsync(fd)
                else:
                    _write_all(fd, data)
                end = (day, size + len(data), ino)
                foreign = os.fstat(fd).st_size != size + len(data)
                if foreign:
                    # Something that takes no lock (the original module) appended while this
                    # batch was written: leave the head at the batch's start, so the next
                    # writer finds the file longer than the head and takes its lines in.
                    end = (day, size, ino)
                if self.sync == "batch":
                    if self.defer and n == last and not created and not foreign:
                        self.unsynced = Unsynced(day, fd, ino, size, size + len(data))
                    elif created:
                        os.fsync(fd)
                    else:
                        sync_data(fd)
                if created and self.sync != "never":
                    fsync_dir(self.layout.root)
        except OSError as exc:
            self._rollback(touched)
            raise storage_error(f"write to {self.layout.day_file_s(day)}", exc) from exc
        return end

    def _open_day(self, day: str, head: Head) -> tuple[int, int, int, bool]:
        """(fd, size, inode, created) to append to ``day``'s file.

        The open fd is reused while it is the head's file with the head's inode (both just
        checked against the path when the head was loaded); otherwise the file is
        (re)opened, and a torn tail a crashed writer left in it is repaired first.
        """
        cached = self.open
        if cached is not None:
            if cached[0] == day == head.day and cached[2] == head.ino:
                return cached[1], head.size, head.ino, False
            os.close(cached[1])
            self.open = None
        path = self.layout.day_file_s(day)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW  # never through a link
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644)
            created = True
        except FileExistsError:
            fd = os.open(path, flags)
            created = False
        st = os.fstat(fd)
        size = st.st_size
        if size and not created and not _ends_with_newline(path, size):
            if repair_tail(self.files, day):
                os.close(fd)
                self.head_stale = True
                raise StorageError(
                    f"{path} ends with a whole record the head did not know of (its newline "
                    "was lost in a crash); the newline is restored and the head will be "
                    "recomputed: nothing was written, record again"
                )
            size = os.fstat(fd).st_size
        self.open = (day, fd, st.st_ino)
        return fd, size, st.st_ino, created

    def _rollback(self, touched: list[tuple[int, int, str]]) -> None:
        for fd, size, day in touched:
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
            except OSError as exc:
                # The next writer will find the size mismatch and quarantine the torn bytes.
                logger.error(
                    "reasoning_trace: could not roll back %s: %s", self.layout.day_file(day), exc
                )
        self.close()

    def close(self) -> None:
        """Close the open day file."""
        if self.open is not None:
            os.close(self.open[1])
            self.open = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n == 0:
            raise OSError(errno.EIO, "write returned 0")
        view = view[n:]


def _ends_with_newline(path: str, size: int) -> bool:
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        return fh.read(1) == b"\n"
