"""Signed checkpoints (SPEC section 4): the C2SP tlog-checkpoint body in a signed note.

The body is three lines — origin, decimal tree size, standard base64 of the root hash — each
ended by a newline (https://c2sp.org/tlog-checkpoint), signed with the log's Ed25519 key whose
name is the origin. Files under the log root::

    checkpoints/<YYYY-MM-DD>.jsonl  each checkpoint signed that day: size, root, datetime_utc, note
    checkpoint                       the newest note, as plain text
    checkpoints/vkey                 every verifier key this log ever signed with, one a line

``TreeState`` keeps the tree under the writer lock: it extends the derived hash file with each
batch and signs a checkpoint at every multiple of ``every`` records (a fixed cadence, so
checkpoints of the same log agree on sizes), after ``seconds`` while the log grows, when a UTC
day ends (covering all of it), and on clean close. Before signing it proves the new tree
consistent with the last checkpoint it signed; if that fails it refuses, loudly (``ForkError``).
Tests: ``tests/test_checkpoint.py``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import platformdirs

from .errors import ForkError, NoteError, ProofError, SigningKeyError, StorageError
from .layout import fsync_dir, quarantine
from .metrics import incr
from .note import Signer, Verifier, _b64decode, note_text, open_note, sign_note
from .proof import verify_consistency
from .record import format_utc, parse_utc
from .tree import CompactRange, HashFile, consistency_proof, leaf_hash, stored_hash_count

__all__ = [
    "Checkpoint",
    "Checkpoints",
    "TreeState",
    "default_origin",
    "key_path",
    "load_signer",
    "open_checkpoint",
    "rotate_key",
]

logger = logging.getLogger("reasoning_trace")

CHECKPOINT_EVERY = 1024
MAX_BODY_BYTES = 1_000_000  # Go's tlog.ParseTree refuses longer checkpoint bodies
_SIZE = re.compile(r"0|[1-9][0-9]*", re.ASCII)
CHECKPOINT_SECONDS = 60.0


def default_origin() -> str:
    """``reasoning-trace/<hostname>``: give each log on a host its own origin if it has several."""
    return f"reasoning-trace/{socket.gethostname()}"


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: which log (origin), how many records, and the root hash."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        """The tlog-checkpoint body text."""
        lines = [
            self.origin,
            str(self.size),
            base64.b64encode(self.root).decode(),
            *self.extensions,
        ]
        return "".join(f"{line}\n" for line in lines)

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        """Parse a checkpoint body as Go's ``tlog.ParseTree`` does.

        At most 1,000,000 bytes; an origin line, a size in canonical ASCII decimal (no sign,
        no leading zero, no other digits, below 2**63), the root in standard base64 of 32
        bytes, each ended by ``\n``; the lines after them are extensions, kept as they are.
        """
        if len(body.encode("utf-8", "surrogatepass")) > MAX_BODY_BYTES:
            raise NoteError(f"checkpoint body is over {MAX_BODY_BYTES} bytes")
        if not body.endswith("\n"):
            raise NoteError("checkpoint body must end with a newline")
        lines = body[:-1].split("\n")
        if len(lines) < 3 or not lines[0]:
            raise NoteError("checkpoint body needs origin, size and root lines")
        origin, size_text, root_text = lines[:3]
        if not _SIZE.fullmatch(size_text) or int(size_text) >= 1 << 63:
            raise NoteError(f"checkpoint size {size_text[:40]!r} is not a decimal number")
        root = _b64decode(root_text, "checkpoint root")
        if len(root) != 32:
            raise NoteError(f"checkpoint root is {len(root)} bytes, not 32")
        return cls(origin, int(size_text), root, tuple(lines[3:]))


def open_checkpoint(note: str | bytes, verifiers: Iterable[Verifier]) -> Checkpoint:
    """Verify a checkpoint note's signature with ``verifiers`` and parse its body."""
    text, by = open_note(note, verifiers)
    checkpoint = Checkpoint.parse(text)
    if all(v.name != checkpoint.origin for v in by):
        raise NoteError(f"checkpoint of {checkpoint.origin!r} is not signed by a key of that name")
    return checkpoint


# --- keys ------------------------------------------------------------------------------------


def key_path(origin: str) -> Path:
    """Where the signing key lives: ``$REASONING_TRACE_KEY``, else the per-user config dir."""
    explicit = os.environ.get("REASONING_TRACE_KEY")
    if explicit:
        return Path(explicit).expanduser().absolute()
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in origin)
    return (
        Path(platformdirs.user_config_dir("reasoning-trace", appauthor=False))
        / "keys"
        / f"{safe}.key"
    )


def load_signer(
    origin: str,
    path: Path | None = None,
    *,
    create: bool = True,
    published: Iterable[Verifier] = (),
) -> Signer:
    """The signing key for ``origin``, created on first use with mode 0600.

    ``published``: the verifier keys the log already published. Where one of them is named
    ``origin``, a missing key file is not replaced by a new key (that would silently change who
    signs the log); ``rtrace keys rotate`` (``rotate_key``) changes keys deliberately.
    Raises ``SigningKeyError`` naming the file and what is wrong with it.
    """
    path = path or key_path(origin)
    mine = [v for v in published if v.name == origin]
    try:
        text = path.read_text()
    except FileNotFoundError:
        if mine:
            raise SigningKeyError(
                f"no signing key at {path}, but this log already published verifier key(s) "
                f"for {origin!r} in checkpoints/vkey: restore that key file (or point "
                "$REASONING_TRACE_KEY at it); to start signing with a new key deliberately, run "
                "`rtrace keys rotate` (checkpoints signed before stay verifiable)",
                str(path),
            ) from None
        if not create:
            raise SigningKeyError(
                f"no signing key at {path} (run `rtrace keys init`)", str(path)
            ) from None
        try:
            return _write_key(path, Signer.generate(origin), exclusive=True)
        except OSError as exc:
            raise SigningKeyError(
                f"cannot create the signing key at {path}: {exc.strerror or exc} (make its "
                "folder writable, or point $REASONING_TRACE_KEY elsewhere)",
                str(path),
            ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningKeyError(f"cannot read the signing key at {path}: {exc}", str(path)) from exc
    try:
        signer = Signer.parse(text)
    except (NoteError, ValueError) as exc:
        raise SigningKeyError(
            f"the signing key file {path} is not a usable signing key ({exc}); restore it from "
            "a backup, or start a new key deliberately with `rtrace keys rotate`",
            str(path),
        ) from exc
    if signer.name != origin:
        raise SigningKeyError(
            f"the key at {path} is named {signer.name!r}, not the log's origin {origin!r}",
            str(path),
        )
    if path.stat().st_mode & 0o077:
        logger.warning("reasoning_trace: signing key %s is readable by others (chmod 600 it)", path)
    return signer


def _write_key(path: Path, signer: Signer, *, exclusive: bool) -> Signer:
    """Create the key file with its whole content at once (a temporary file hard-linked into
    place), so a concurrent process never reads it half written; if another process created it
    first, use theirs."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(str(signer) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return Signer.parse(path.read_text())
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return signer


def rotate_key(origin: str, path: Path | None = None) -> tuple[Signer, Path]:
    """Make a new signing key; the old one is kept beside it as ``<name>.retired-<time>``."""
    path = path or key_path(origin)
    retired = path.with_name(
        f"{path.name}.retired-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    )
    if path.exists():
        os.replace(path, retired)
    return _write_key(path, Signer.generate(origin), exclusive=True), retired


# --- files -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One line of ``checkpoints/<day>.jsonl``."""

    size: int
    root: bytes
    datetime_utc: str
    note: str
    file: str
    line: int


class Checkpoints:
    """The checkpoint files of one log root.

    Checkpoint day files get the care day files get (SPEC 2): a line is appended whole or not
    at all (a failed write is cut back), and bytes after the last newline, left by a crash, are
    never read as a checkpoint; the next writer restores the newline of a whole entry or moves
    a torn one to ``quarantine/``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "checkpoints"
        self.newest = root / "checkpoint"
        self.vkey = self.dir / "vkey"

    def days(self) -> list[Path]:
        """The checkpoint day files, oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob("*.jsonl") if len(p.stem) == 10 and p.is_file())

    def entries(self) -> Iterator[Entry]:
        """Every checkpoint, in the order they were signed (streaming); a malformed line
        raises ``NoteError``. A torn last line is not an entry (see ``torn``)."""
        for item in self.entries_and_errors():
            if isinstance(item, NoteError):
                raise item
            yield item

    def entries_and_errors(self) -> Iterator[Entry | NoteError]:
        """Every checkpoint in signing order, a malformed line as its ``NoteError`` (with its
        place) and the lines after it all the same: for auditors, who must see past one."""
        for path in self.days():
            with open(path, "rb") as fh:
                for n, raw in enumerate(fh, start=1):
                    if raw.endswith(b"\n"):
                        try:
                            yield _entry(raw, str(path), n)
                        except NoteError as exc:
                            yield exc

    def torn(self) -> list[tuple[Path, int, int]]:
        """(file, byte offset, length) of the bytes after the last newline of each checkpoint
        file: a checkpoint write a crash interrupted, not yet repaired by a writer."""
        out = []
        for path in self.days():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                out.append((path, cut, len(data) - cut))
        return out

    def latest(self) -> Entry | None:
        """The last checkpoint signed (from the newest day file's last complete line)."""
        for path in reversed(self.days()):
            data = path.read_bytes()
            lines = data[: data.rfind(b"\n") + 1].splitlines()
            if lines:
                return _entry(lines[-1], str(path), len(lines))
        return None

    def newest_note(self) -> str | None:
        """The newest signed note, or ``None`` before the first.

        ``<root>/checkpoint`` is a plain-text copy of the newest entry; when it is not a note
        (invalid UTF-8, control characters: damaged or tampered with), the newest entry of
        ``checkpoints/`` is used instead, with a warning.
        """
        try:
            data = self.newest.read_bytes()
        except FileNotFoundError:
            data = None
        if data is not None:
            try:
                return note_text(data)
            except NoteError as exc:
                logger.warning("%s is not a signed note (%s); using checkpoints/", self.newest, exc)
        latest = self.latest()
        return latest.note if latest is not None else None

    def origin(self) -> str | None:
        """The origin of the newest checkpoint, if any: a log keeps its origin."""
        text = self.newest_note()
        if text is None:
            return None
        first = text.split("\n", 1)[0]
        return first or None

    def verifiers(self) -> list[Verifier]:
        """The verifier keys this log published."""
        try:
            text = self.vkey.read_text()
        except FileNotFoundError:
            return []
        return [Verifier.parse(line) for line in text.splitlines() if line.strip()]

    def publish(self, verifier: Verifier) -> None:
        """Add a verifier key to ``checkpoints/vkey`` (kept forever, across rotations)."""
        if any(str(v) == str(verifier) for v in self.verifiers()):
            return
        self.dir.mkdir(exist_ok=True)
        _append_whole(self.vkey, f"{verifier}\n".encode())

    def repair(self) -> None:
        """Mend each checkpoint file a crash left without its final newline (writer only)."""
        for path, cut, length in self.torn():
            with open(path, "rb") as fh:
                fh.seek(cut)
                fragment = fh.read(length)
            try:
                _entry(fragment, str(path), 0)
            except NoteError:
                qpath = quarantine(self.root, f"checkpoints-{path.name}.{cut}", fragment)
                with open(path, "r+b") as fh:
                    fh.truncate(cut)
                    fh.flush()
                    os.fsync(fh.fileno())
                incr("torn_tails_quarantined")
                logger.warning(
                    "reasoning_trace: cut a torn checkpoint line of %d bytes from %s at byte "
                    "%d (a checkpoint write interrupted by a crash); kept in %s",
                    length,
                    path,
                    cut,
                    qpath,
                )
            else:
                _append_whole(path, b"\n")
                incr("newlines_restored")
                logger.warning(
                    "reasoning_trace: restored the newline of the last checkpoint in %s", path
                )

    def append(self, checkpoint: Checkpoint, note: str, micros: int) -> None:
        """Record a signed checkpoint durably and make it the newest.

        A failed write (a full disk) leaves no partial line: the file is cut back, the error
        raised, and the checkpoint can be signed again later.
        """
        self.dir.mkdir(exist_ok=True)
        when = format_utc(micros)
        line = orjson.dumps(
            {
                "size": checkpoint.size,
                "root": base64.b64encode(checkpoint.root).decode(),
                "datetime_utc": when,
                "note": note,
            },
            option=orjson.OPT_SORT_KEYS,
        )
        path = self.dir / f"{when[:10]}.jsonl"
        if path.exists() and path.stat().st_size and not _ends_with_newline(path):
            self.repair()  # another writer crashed mid-line: never weld onto its bytes
        _append_whole(path, line + b"\n")
        self.write_newest(note)

    def write_newest(self, note: str) -> None:
        """Replace ``<root>/checkpoint`` with ``note`` atomically (a temporary file renamed)."""
        tmp = self.root / ".checkpoint.tmp"
        try:
            with open(tmp, "w") as fh:
                fh.write(note)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.newest)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.root)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _append_whole(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` and fsync; on failure cut the file back to its old size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
            except OSError as exc:
                logger.error(
                    "reasoning_trace: could not cut %s back to %d bytes: %s", path, size, exc
                )
            raise
    finally:
        os.close(fd)


def _entry(raw: bytes, file: str, line: int) -> Entry:
    try:
        obj = orjson.loads(raw)
        return Entry(
            int(obj["size"]),
            base64.b64decode(obj["root"], validate=True),
            str(obj["datetime_utc"]),
            str(obj["note"]),
            file,
            line,
        )
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise NoteError(f"{file}:{line}: not a checkpoint entry ({exc})") from exc


# --- the tree under the writer lock ----------------------------------------------------------


class TreeState:
    """The log's tree, extended under the writer lock, and its signing schedule."""

    def __init__(
        self,
        root: Path,
        *,
        origin: str | None = None,
        key: Path | None = None,
        every: int = CHECKPOINT_EVERY,
        seconds: float = CHECKPOINT_SECONDS,
        hashes: Path | None = None,
    ) -> None:
        self.files = Checkpoints(root)
        self.origin = origin or self.files.origin() or default_origin()
        self.key = key
        self.every = every
        self.seconds = seconds
        self.files = Checkpoints(root)
        self.hashes = HashFile(str(hashes or root / ".rtrace" / "hashes"))
        self.range: CompactRange | None = None
        self._pending: list[bytes] = []  # stored hashes not yet in the file
        self.halted: str | None = None  # why signing stopped, if it did
        self.owed = False  # a due checkpoint could not be written (a full disk): sign it next
        self.floor_micros = 0  # the newest record's instant: no checkpoint is dated before it
        self._first_batch_done = False
        self._signer: Signer | None = None
        self._last_signed: float | None = None  # monotonic time of the last checkpoint

    @property
    def signer(self) -> Signer:
        """The signing key, loaded (or created, for a log that published none) on first use.

        Raises ``SigningKeyError`` naming the key file when it cannot be used: the writer
        calls this before its first append, so a log never records while unable to sign.
        """
        if self._signer is None:
            try:
                published = self.files.verifiers()
            except NoteError as exc:
                raise SigningKeyError(
                    f"{self.files.vkey} holds a malformed verifier key ({exc})",
                    str(self.files.vkey),
                ) from exc
            signer = load_signer(self.origin, self.key, published=published)
            self.files.publish(signer.verifier)
            self.files.repair()
            self._signer = signer
        return self._signer

    def ready(self) -> None:
        """Check, before the first record, that this log can sign: see ``signer``."""
        self.signer  # noqa: B018 -- loads and checks the key

    def flush(self) -> None:
        """Write buffered hashes to the hash file (before the writer lock is let go)."""
        if self._pending:
            pending, self._pending = self._pending, []
            self.hashes.append(pending)

    def sync_to(
        self, size: int, lines_from: Callable[[int], Iterator[bytes]], *, trusted: bool = False
    ) -> CompactRange:
        """The compact range of ``size`` leaves, catching the hash file up from the records.

        ``trusted``: the writer lock was held since this process last extended the tree, so
        nobody else can have changed it and the file need not be checked.
        """
        rng = self.range
        if trusted and rng is not None and rng.size == size:
            return rng
        self.flush()
        count = self.hashes.count()
        if rng is not None and rng.size == size and count == stored_hash_count(size):
            return rng
        have = self.hashes.leaves()
        if have > size or count != stored_hash_count(have):
            self.hashes.truncate_to_leaves(min(have, size))
            have = min(have, size)
        rng = CompactRange.load(have, self.hashes)
        if have < size:
            pending = []
            for line in lines_from(have):
                pending.extend(rng.append(leaf_hash(line)))
                if len(pending) >= 65536:
                    self.hashes.append(pending)
                    pending = []
                if rng.size == size:
                    break
            self.hashes.append(pending)
            if rng.size != size:
                raise StorageError(f"the day files hold {rng.size} records, the head says {size}")
        self.range = rng
        return rng

    def extend(
        self,
        start: int,
        prev_day: str | None,
        lines: list[tuple[str, bytes]],
        lines_from: Callable[[int], Iterator[bytes]],
        micros: int,
        before_sign: Callable[[], None] = lambda: None,
        *,
        trusted: bool = False,
    ) -> None:
        """Add a batch's (day, line) leaves after ``start`` records; sign what is due.

        ``before_sign`` makes the records durable first where the log's writes are not.
        """
        rng = self.sync_to(start, lines_from, trusted=trusted)
        due: list[tuple[int, bytes]] = []
        if not self._first_batch_done:
            self._first_batch_done = True
            if start and self.files.latest() is None:
                # Records nobody signed yet precede this batch (the original module's, being
                # adopted): a checkpoint signs them before anything else.
                due.append((start, rng.root()))
        pending = self._pending  # nothing below flushes until the loop is done
        day = prev_day
        for line_day, line in lines:
            if day is not None and line_day != day and rng.size:
                due.append((rng.size, rng.root()))  # the UTC day ended: cover all of it
            day = line_day
            pending.extend(rng.append(leaf_hash(line)))
            if self.every and rng.size % self.every == 0:
                due.append((rng.size, rng.root()))
        if len(pending) > 8192:
            self.flush()
        now = time.monotonic()
        if self._last_signed is None:
            self._last_signed = now
        elif self.seconds and now - self._last_signed >= self.seconds:
            due.append((rng.size, rng.root()))
        if self.owed and (not due or due[-1][0] != rng.size):
            due.append((rng.size, rng.root()))  # a checkpoint that could not be written before
        if due:
            before_sign()
            self.flush()
        for size, root in due:
            self.sign(size, root, micros, automatic=True)

    def sign(self, size: int, root: bytes, micros: int, *, automatic: bool = False) -> str | None:
        """Sign a checkpoint for (size, root) unless the newest one already covers it.

        Refuses with ``ForkError`` when it would not extend the last signed checkpoint; the
        automatic schedule logs that error and stops signing instead of raising into a write.
        """
        if self.halted:
            if automatic:
                return None
            raise ForkError(self.halted)
        self.flush()
        latest = self.files.latest()
        if latest is not None:
            try:
                if latest.size > size:
                    raise ProofError(f"the log has {size} records, {latest.size} were signed")
                if latest.size == size:
                    if latest.root != root:
                        raise ProofError(f"size {size} was signed with another root")
                    if self.owed:  # its line was written; the newest-note file may not be
                        self.files.write_newest(latest.note)
                        self.owed = False
                    return None
                if latest.size:
                    proof = consistency_proof(latest.size, size, self.hashes)
                    verify_consistency(latest.size, size, latest.root, root, proof)
            except ProofError as exc:
                self.halted = (
                    f"refusing to sign size {size}: it does not extend the checkpoint of size "
                    f"{latest.size} signed at {latest.datetime_utc} ({exc}); the log's signed "
                    "history may have been rewritten; run `rtrace verify`"
                )
                if automatic:
                    logger.error("reasoning_trace: %s", self.halted)
                    return None
                raise ForkError(self.halted) from exc
        # A checkpoint is never dated before the records it covers or the checkpoint before
        # it, whatever the clock says: its day file then follows the signing order.
        micros = max(micros, self.floor_micros)
        if latest is not None:
            with contextlib.suppress(ValueError):  # a date this product did not write
                micros = max(micros, parse_utc(latest.datetime_utc))
        checkpoint = Checkpoint(self.origin, size, root)
        note = sign_note(checkpoint.body(), [self.signer])
        try:
            self.files.append(checkpoint, note, micros)
        except OSError:
            self.owed = True  # signed again, at the then current size, by the next batch
            incr("checkpoint_write_failures")
            raise
        self.owed = False
        self._last_signed = time.monotonic()
        return note

    def sign_current(self, micros: int, *, automatic: bool = False) -> str | None:
        """Sign the tree as far as it is synced (see ``sign``); nothing for an empty log."""
        if self.range is None or self.range.size == 0:
            return None
        return self.sign(self.range.size, self.range.root(), micros, automatic=automatic)

    def note_for(self, size: int) -> str | None:
        """The signed note of the checkpoint of exactly ``size`` records, if one was signed."""
        for entry in self.files.entries():
            if entry.size == size:
                return entry.note
        return None

    def close(self) -> None:
        """Write what is buffered and close the hash file."""
        self.flush()
        self.hashes.close()
