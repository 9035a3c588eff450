"""Which logs sign with a key file, so that one log's key never silently becomes another's.

Beside each signing key file, ``<key>.logs`` lists the log roots that took that key: one real
path (links resolved) a line, as a JSON string. A log is listed, under an exclusive lock on
that file, before it first creates or publishes the key, and again (when missing) each time
a writer loads it, so a log moved to another folder is listed at its new place once it is
written there. The lock also makes "is this key taken? then take it" one step for every
process that claims the key. Two decisions read the list:

- ``claim``: a log with no origin of its own yet (no published key, no checkpoint) that would
  sign with a per-origin key file that already exists is refused (``SharedKeyError``) when its
  origin was configured (argument, ``--origin``, ``$REASONING_TRACE_ORIGIN``) and the file
  does not list it, or when another listed log may use the key, unless told the key is
  shared on purpose (``shared_ok``). A key file named explicitly (``key=``,
  ``$REASONING_TRACE_KEY``) is shared by design and never refused here.
- ``others``: ``rtrace keys rotate`` refuses a key that another listed log may use, unless
  ``--shared-ok`` (``keys.rotate_log_key``); ``rtrace doctor`` warns about one.

A listed log *may use* the key while its folder exists and it signs as the key's origin or
has no origin yet, or cannot be read (nobody can tell then). A folder that is gone no longer
counts. A list that cannot be written is read where it can be: the checks then know what it
lists (with a warning, unless the key itself is kept in a read-only place, where no rotation
can change it either).
Tests: ``tests/test_key_owners.py``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .checkpoint import Checkpoints
from .errors import SharedKeyError

__all__ = ["KeyOwners", "claim", "key_owners", "listed_owners", "owners_path", "real_root"]

logger = logging.getLogger("reasoning_trace")

#: Appended to a key file's name to name the list of the logs that use it.
SUFFIX = ".logs"


def owners_path(key: Path) -> Path:
    """``<key>.logs``: the list of the logs that sign with the key file ``key``."""
    return key.with_name(key.name + SUFFIX)


def real_root(root: Path) -> str:
    """The path a log is listed as: its real path, links resolved."""
    return os.path.realpath(root)


def _parse(data: bytes) -> list[str]:
    """The roots listed in ``data``: each whole line that is a JSON string (a line a crash
    cut short, or anything else, is skipped)."""
    roots: list[str] = []
    for line in data.split(b"\n")[:-1]:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, str) and value not in roots:
            roots.append(value)
    return roots


def _may_use(root: str, origin: str) -> bool:
    """Whether the log listed at ``root`` may sign with the key of ``origin``."""
    try:
        os.stat(root)
    except (FileNotFoundError, NotADirectoryError):
        return False  # gone: a deleted log, or one moved (listed again where it is written)
    except OSError:
        return True
    try:
        own = Checkpoints(Path(root)).origin()
    except (OSError, ValueError):
        return True
    return own is None or own == origin


class KeyOwners:
    """The logs listed as using one key file, read (and, when it could be opened for writing,
    added to) under the list's lock; see the module docstring."""

    def __init__(self, key: Path, fd: int | None, data: bytes, writable: bool) -> None:
        self.key = key
        self.path = owners_path(key)
        self.roots = _parse(data)
        self._fd = fd
        self._writable = writable
        self._torn = bool(data) and not data.endswith(b"\n")

    def lists(self, root: Path) -> bool:
        """Whether the log at ``root`` is listed."""
        return real_root(root) in self.roots

    def others(self, root: Path, origin: str) -> list[str]:
        """The listed logs other than the one at ``root`` that may use the key of ``origin``."""
        me = real_root(root)
        return [r for r in self.roots if r != me and _may_use(r, origin)]

    def add(self, root: Path) -> None:
        """List the log at ``root`` (durably) unless it is; a list that cannot be written is
        left as it is, with a warning."""
        real = real_root(root)
        if real in self.roots:
            return
        if self._fd is None or not self._writable:
            if not os.access(self.key.parent, os.W_OK):
                return  # a key kept in a read-only place: nobody rotates it there either
            logger.warning(
                "reasoning_trace: cannot list %s as a user of the signing key %s in %s: "
                "`rtrace keys rotate` of another log will not know this log uses that key",
                real,
                self.key,
                self.path,
            )
            return
        data = (b"\n" if self._torn else b"") + json.dumps(real).encode() + b"\n"
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as exc:  # a full disk: the key is still usable, the list is not told
            logger.warning("reasoning_trace: cannot list %s in %s: %s", real, self.path, exc)
            self._torn = True
            return
        self._torn = False
        self.roots.append(real)


def _open(path: Path) -> tuple[int | None, bool]:
    """The list file opened for appending (created, mode 0600), else for reading, else
    ``None``; and whether it can be written."""
    flags = os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return os.open(path, flags | os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), True
    except OSError as exc:
        try:
            return os.open(path, flags | os.O_RDONLY), False
        except FileNotFoundError:
            return None, False
        except OSError:
            logger.warning("reasoning_trace: cannot open %s: %s", path, exc)
            return None, False


@contextmanager
def key_owners(key: Path) -> Iterator[KeyOwners]:
    """The list of the logs that use the key file ``key``, held under an exclusive lock
    until the block ends: decide and take the key within it."""
    path = owners_path(key)
    fd, writable = _open(path)
    if fd is None:
        yield KeyOwners(key, None, b"", False)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield KeyOwners(key, fd, _read_all(fd), writable)
    finally:
        os.close(fd)  # lets the lock go


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 65536, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def listed_owners(key: Path) -> KeyOwners:
    """The list of the logs that use ``key``, read without a lock and never written (for
    readers such as ``rtrace doctor``)."""
    try:
        data = owners_path(key).read_bytes()
    except OSError:
        data = b""
    return KeyOwners(key, None, data, False)


def claim(
    owners: KeyOwners,
    root: Path,
    origin: str,
    *,
    configured: str | None,
    shared_ok: bool = False,
) -> None:
    """Refuse (``SharedKeyError``) to let the log at ``root``, which has no origin of its own
    yet, sign with the existing key file of ``origin`` when that key belongs to another log:
    another listed log may use it, or ``origin`` was configured (``configured`` says where)
    and the file does not list this log. ``shared_ok``: the caller shares it on purpose."""
    if shared_ok or not os.path.lexists(owners.key):
        return
    others = owners.others(root, origin)
    if not others and (configured is None or owners.lists(root)):
        return
    where = shlex.quote(str(root))
    named = f"{configured} names origin {origin!r}; its" if configured else "The"
    if not configured:
        named += f" origin of a new log here, {origin!r}, is taken: its"
    whose = f"another log: {', '.join(others)}" if others else "another log"
    instead = (
        f"drop {configured} (this log then gets an origin of its own) or name another"
        if configured
        else f"give this log an origin of its own: `rtrace --dir {where} keys init --origin NEW`"
    )
    raise SharedKeyError(
        f"{named} signing key {owners.key} already belongs to {whose}. The log at {root} has "
        "no origin of its own yet, and two logs signing with one key would change key "
        "together (rotating one rotates the other; pinned verifier keys stop matching); "
        f"nothing was changed. Instead, {instead}; or, to sign it with that key deliberately "
        "(shared on purpose, or made for this log): "
        f"`rtrace --dir {where} keys init --origin {shlex.quote(origin)} --shared-ok` "
        "(library: shared_ok=True)",
        origin=origin,
        key=str(owners.key),
        others=others,
    )
