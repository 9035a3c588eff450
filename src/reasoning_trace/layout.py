"""Where everything of a log lives (SPEC section 2), and the listing and reading of day files.

Under a log root::

    <root>/<YYYY-MM-DD>.jsonl           the records of that UTC day, only ever appended to
    <root>/quarantine/                  torn tails cut off after a crash, kept for forensics
    <root>/checkpoints/<YYYY-MM-DD>.jsonl  the checkpoints signed that day (SPEC section 4)
    <root>/checkpoints/vkey             every verifier key the log signed with, one a line
    <root>/checkpoints/cosignatures.jsonl  witness cosignatures received, one a line
    <root>/checkpoints/witness-refusals.jsonl  witnesses that refused a checkpoint (evidence)
    <root>/checkpoint                   the newest signed note, as plain text
    <root>/witnesses                    the witnesses this log sends its checkpoints to
    <root>/.checkpoint.tmp              the next newest note while it is written (then renamed)
    <root>/.rtrace/                     derived: deleting it loses nothing
        lock                            the head the writers cache (next seq, last day file);
                                        not the lock itself, an flock of <root> (writer_lock)
        index.sqlite                    the id/seq/filter index
        hashes                          the tree's stored hashes, one file in tlog's order
        replicated-<stream>-<node>.json how far the log was replicated
        witnesses.json                  how far each witness cosigned (the client's cursor)

Outside the root: the signing key (``key_path``, per user and origin, so per log), a reader's
derived index (``reader_cache``, per user: reading never writes under the root), and the shared
state of the verifier that server processes run for a log (``watch_dir``, per user: its lock
and its last result). Every other module asks this one for a path; none spells one. Modelled
on trillian-tessera's ``api/layout``. ``platformdirs``, ``hashlib`` and ``tempfile`` are imported
by the functions that need them: reading a named root imports none (``tests/test_startup.py``).
Tests: ``tests/test_files.py``, ``tests/test_faults.py`` (torn tails, quarantine).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import LogRootMissing

__all__ = [
    "CHECKPOINTS",
    "DAY_RE",
    "DERIVED_DIR",
    "QUARANTINE",
    "Layout",
    "day_file_name",
    "day_of_name",
    "drop_links",
    "explicit_key_path",
    "fsync_dir",
    "is_day",
    "key_path",
    "lines",
    "lines_backward",
    "open_derived",
    "quarantine",
    "reader_cache",
    "resolve_root",
    "watch_dir",
]

DERIVED_DIR = ".rtrace"
CHECKPOINTS = "checkpoints"
QUARANTINE = "quarantine"
#: A day file's name stem: ``YYYY-MM-DD`` (ASCII digits only).
DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_DAY_FILE = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})\.jsonl\Z")
#: How much a reader reads at once.
CHUNK = 1 << 20


def is_day(name: str) -> bool:
    """Whether ``name`` is a day (``YYYY-MM-DD``) that a day file can be named for."""
    return DAY_RE.match(name) is not None


def day_file_name(day: str) -> str:
    """The name of the file holding the records of UTC day ``day`` (``YYYY-MM-DD.jsonl``)."""
    return f"{day}.jsonl"


def day_of_name(name: str) -> str | None:
    """The day of a file named ``YYYY-MM-DD.jsonl``, else ``None``."""
    m = _DAY_FILE.match(name)
    return m.group(1) if m else None


def resolve_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The log root: the argument, else ``$REASONING_TRACE_DIR``, else the per-user data dir.

    Never relative to the working directory unless the caller passed a relative path.
    """
    if root is None or root == "":
        root = os.environ.get("REASONING_TRACE_DIR") or _user_log_dir()
    return Path(os.path.abspath(os.path.expanduser(os.fspath(root))))


def _user_log_dir() -> str:
    """The per-user data directory's ``log`` folder (the root when none is named)."""
    import platformdirs

    return os.path.join(platformdirs.user_data_dir("reasoning-trace", appauthor=False), "log")


def explicit_key_path() -> Path | None:
    """The key file ``$REASONING_TRACE_KEY`` names (absolute), if it names one."""
    explicit = os.environ.get("REASONING_TRACE_KEY")
    return Path(explicit).expanduser().absolute() if explicit else None


def key_path(origin: str) -> Path:
    """Where the signing key of ``origin`` lives: ``$REASONING_TRACE_KEY``, else
    ``<per-user config dir>/keys/<origin>.key`` (characters other than letters, digits and
    ``-_.`` replaced by ``_``; a name too long for a file name is cut and ends in a hash of
    the origin). Each log has its own origin (``origin.log_origin``), so its own key file."""
    import hashlib

    import platformdirs

    explicit = explicit_key_path()
    if explicit is not None:
        return explicit
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in origin)
    if len(safe.encode()) > 200:
        digest = hashlib.sha256(origin.encode()).hexdigest()[:16]
        safe = f"{safe.encode()[:100].decode(errors='ignore')}-{digest}"
    return (
        Path(platformdirs.user_config_dir("reasoning-trace", appauthor=False))
        / "keys"
        / f"{safe}.key"
    )


class Layout:
    """The paths of the log at ``root`` (an absolute path); see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root_s = str(root)
        self.derived = root / DERIVED_DIR
        self.head_file = self.derived / "lock"  # named "lock" on disk; the lock is the root's flock
        self.index = self.derived / "index.sqlite"
        self.hashes = self.derived / "hashes"
        self.checkpoints = root / CHECKPOINTS
        self.vkey = self.checkpoints / "vkey"
        self.newest_note = root / "checkpoint"
        self.newest_note_tmp = root / ".checkpoint.tmp"
        self.quarantine = root / QUARANTINE
        self.cosignatures = self.checkpoints / "cosignatures.jsonl"
        self.witness_refusals = self.checkpoints / "witness-refusals.jsonl"
        self.witnesses = root / "witnesses"
        self.witness_cursor = self.derived / "witnesses.json"

    def day_file(self, day: str) -> Path:
        """The file holding the records of UTC day ``day`` (``YYYY-MM-DD``)."""
        return self.root / day_file_name(day)

    def day_file_s(self, day: str) -> str:
        """``day_file`` as a string (the writer's hot path)."""
        return f"{self.root_s}/{day_file_name(day)}"

    def days(self) -> list[str]:
        """The days that have a day file (a regular file, not a link), oldest first.

        Raises ``LogRootMissing`` when the root does not exist.
        """
        try:
            with os.scandir(self.root) as entries:
                return sorted(
                    day
                    for e in entries
                    if (day := day_of_name(e.name)) and e.is_file(follow_symlinks=False)
                )
        except FileNotFoundError as exc:
            raise LogRootMissing(f"log root {self.root} does not exist") from exc

    def day_files(self) -> list[Path]:
        """The day files, oldest first (see ``days``)."""
        return [self.day_file(day) for day in self.days()]

    def named_like_days(self) -> list[Path]:
        """Everything named like a day file or a checkpoint day file, whatever it is (a
        directory, a link): what is not a regular file is an odd entry for ``verify``."""
        found: list[Path] = []
        for folder in (self.root, self.checkpoints):
            with (
                contextlib.suppress(FileNotFoundError, NotADirectoryError),
                os.scandir(folder) as entries,
            ):
                found += [Path(e.path) for e in entries if day_of_name(e.name)]
        return sorted(found)

    def checkpoint_file(self, day: str) -> Path:
        """The file of the checkpoints signed on UTC day ``day``."""
        return self.checkpoints / f"{day}.jsonl"

    def checkpoint_files(self) -> list[Path]:
        """The checkpoint day files (regular files), oldest first."""
        try:
            with os.scandir(self.checkpoints) as entries:
                return sorted(
                    Path(e.path)
                    for e in entries
                    if day_of_name(e.name) and e.is_file(follow_symlinks=False)
                )
        except (FileNotFoundError, NotADirectoryError):
            return []

    def replicated(self, stream: str, node: str) -> Path:
        """Where the writer keeps how far the log was replicated to ``stream`` as ``node``."""
        return self.derived / f"replicated-{stream}-{node}.json"


def lines(path: Path | str, start: int = 0) -> Iterator[tuple[int, int | None, bytes]]:
    """Complete, non-empty lines of a day file from byte ``start``: (offset, line number,
    bytes). Line numbers (1-based) are known only when reading from the start of the file;
    bytes after the last newline (torn, or being written) are not a line. A missing file has
    no lines."""
    try:
        fh = open(path, "rb", buffering=0)  # noqa: SIM115 -- closed by the with below
    except FileNotFoundError:
        return
    with fh:
        fh.seek(start)
        offset, carry = start, b""
        lineno: int | None = 0 if start == 0 else None
        # The first read is small: a caller that wants only the first line (the legacy
        # prefix's check, which every reader makes) does not read a whole MiB.
        size = 1 << 16
        while True:
            block = fh.read(size)
            size = CHUNK
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


def lines_backward(path: Path | str) -> Iterator[tuple[int, bytes]]:
    """Complete, non-empty lines of a file from the last to the first: (offset, bytes). Bytes
    after the last newline are not a line. A missing file has no lines."""
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


def reader_cache(root: Path) -> Path:
    """Where a reader keeps the derived index of the log at ``root``: the per-user cache
    directory, keyed by the log's path and the first bytes of its first day file (its
    identity), so that reading never writes under the log root (SPEC 4a). Falls back to a
    private temporary directory when the cache directory cannot be written. (A reader's tree
    hashes are not kept here: they are hashed afresh in each process, see
    ``FileStore.signed_tree``.)"""
    import hashlib
    import tempfile

    import platformdirs

    first = b""
    with contextlib.suppress(OSError, ValueError):
        days = Layout(root).days()
        if days:
            with open(Layout(root).day_file(days[0]), "rb") as fh:
                first = fh.read(4096).split(b"\n", 1)[0]
    key = hashlib.sha256(os.fsencode(str(root)) + b"\0" + first).hexdigest()[:24]
    base = Path(platformdirs.user_cache_dir("reasoning-trace", appauthor=False)) / "logs" / key
    try:
        base.mkdir(parents=True, exist_ok=True)
        if os.access(base, os.W_OK):
            return base
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="rtrace-reader-"))


def watch_dir(root: Path) -> Path | None:
    """Where the processes serving the log at ``root`` share one verifier: the per-user cache
    directory, keyed by the log's path only, holding ``watch.lock`` (held by the process that
    verifies) and ``watch.json`` (its last result). ``None`` when it cannot be written: then
    each process verifies for itself (a shared temporary folder is not used, as whoever can
    write there could hand the servers a result)."""
    import hashlib

    import platformdirs

    key = hashlib.sha256(os.fsencode(str(root))).hexdigest()[:24]
    folder = Path(platformdirs.user_cache_dir("reasoning-trace", appauthor=False)) / "watch" / key
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


def open_derived(path: Path | str, flags: int) -> int:
    """Open a derived file under ``.rtrace/`` for writing, never through a symbolic link: a
    link in its place (whoever can write the log's folder can make one) is removed, as the
    derived file it replaces may be, and the file is created afresh."""
    flags |= os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        return os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
    os.unlink(path)
    return os.open(path, flags | os.O_CREAT, 0o644)


def drop_links(path: Path | str, suffixes: tuple[str, ...] = ("",)) -> None:
    """Remove symbolic links at ``path`` + each suffix (derived files to be written: a link
    planted in their place is never written through)."""
    for suffix in suffixes:
        if os.path.islink(f"{path}{suffix}"):
            os.unlink(f"{path}{suffix}")


def fsync_dir(path: Path | str) -> None:
    """Make a directory's entries (a created, renamed or removed file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def quarantine(layout: Layout, name: str, fragment: bytes) -> Path:
    """Keep ``fragment`` (bytes a crash left, never acknowledged) durably as
    ``<root>/quarantine/<name>.<ns>.torn``; return its path."""
    qdir = layout.quarantine
    qdir.mkdir(exist_ok=True)
    qpath = qdir / f"{name}.{time.time_ns()}.torn"
    try:
        with open(qpath, "xb") as fh:
            fh.write(fragment)
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(qdir)
    except OSError:
        qpath.unlink(missing_ok=True)  # no empty or partial copy (a full disk): retried later
        raise
    return qpath
