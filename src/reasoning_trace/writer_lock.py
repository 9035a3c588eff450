"""The writer lock of one log root, shared by every thread and process that writes it.

The lock is an ``flock`` of the root directory itself, not of a file under ``.rtrace/``:
deleting the derived directory (documented as safe, SPEC section 2) while writers run can then
never let two of them hold "the" lock at once. The head file ``.rtrace/lock`` (``layout``) is
only a cache of the head (``head.Head``), re-created when it was deleted or replaced.
Tests: ``tests/test_processes.py`` (many writers), ``tests/test_faults.py`` (``.rtrace``
deleted under writers).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os

from .errors import LogRootMissing
from .head import HEAD_BYTES, Head
from .layout import Layout, open_derived

__all__ = ["WriterLock"]


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
        """Cache ``head`` (under the lock)."""
        os.pwrite(fd, head.encode(), 0)

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
