"""Signed checkpoints (SPEC section 4): the C2SP tlog-checkpoint body in a signed note.

The body is three lines — origin, decimal tree size, standard base64 of the root hash — each
ended by a newline (https://c2sp.org/tlog-checkpoint), signed with the log's Ed25519 key whose
name is the origin. Files under the log root::

    checkpoints/<YYYY-MM-DD>.jsonl  each checkpoint signed that day: size, root, datetime_utc, note
    checkpoint                       the newest note, as plain text
    checkpoints/vkey                 every verifier key this log ever signed with, one a line

``Checkpoints`` reads and appends these files; ``signed_tree.SignedTree`` decides when to sign
and signs; ``keys`` holds the signing key.
Tests: ``tests/test_checkpoint.py``, ``tests/test_integrity_edges.py`` (``newest_checked``).
"""

from __future__ import annotations

import binascii
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from .errors import IntegrityError, NoteError
from .layout import Layout, fsync_dir, quarantine
from .metrics import incr
from .note import Verifier, note_text, open_note
from .record import format_utc
from .tree import Hash
from .whole_lines import append_whole, ends_with_newline

__all__ = [
    "Checkpoint",
    "Checkpoints",
    "Entry",
    "open_checkpoint",
]

logger = logging.getLogger("reasoning_trace")

CHECKPOINT_EVERY = 1024
MAX_BODY_BYTES = 1_000_000  # Go's tlog.ParseTree refuses longer checkpoint bodies
_SIZE = re.compile(r"0|[1-9][0-9]*", re.ASCII)
CHECKPOINT_SECONDS = 60.0


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
            str(Hash(self.root)),
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
        root = Hash.parse(root_text, "checkpoint root", error=NoteError)
        return cls(origin, int(size_text), root, tuple(lines[3:]))


def open_checkpoint(note: str | bytes, verifiers: Iterable[Verifier]) -> Checkpoint:
    """Verify a checkpoint note's signature with ``verifiers`` and parse its body."""
    text, by = open_note(note, verifiers)
    checkpoint = Checkpoint.parse(text)
    if all(v.name != checkpoint.origin for v in by):
        raise NoteError(f"checkpoint of {checkpoint.origin!r} is not signed by a key of that name")
    return checkpoint


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
        self.layout = Layout(root)
        self.dir = self.layout.checkpoints
        self.newest = self.layout.newest_note
        self.vkey = self.layout.vkey

    def files(self) -> list[Path]:
        """The checkpoint day files (``checkpoints/<YYYY-MM-DD>.jsonl``), oldest first."""
        return self.layout.checkpoint_files()

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
        for path in self.files():
            for _, item in self.file_entries(path):
                yield item

    def file_entries(
        self, path: Path, start: int = 0, lines: int = 0
    ) -> Iterator[tuple[int, Entry | NoteError]]:
        """The checkpoints of one checkpoint file from byte ``start`` (after ``lines`` lines),
        each with the byte offset where its line ends; a malformed line as its ``NoteError``.
        A verifier that read the file before reads on from there (``verify_incremental``)."""
        with open(path, "rb") as fh:
            fh.seek(start)
            offset = start
            for n, raw in enumerate(fh, start=lines + 1):
                if not raw.endswith(b"\n"):
                    return  # torn: not an entry (see ``torn``)
                offset += len(raw)
                try:
                    yield offset, _entry(raw, str(path), n)
                except NoteError as exc:
                    yield offset, exc

    def torn(self) -> list[tuple[Path, int, int]]:
        """(file, byte offset, length) of the bytes after the last newline of each checkpoint
        file: a checkpoint write a crash interrupted, not yet repaired by a writer."""
        out = []
        for path in self.files():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                out.append((path, cut, len(data) - cut))
        return out

    def latest(self) -> Entry | None:
        """The last checkpoint signed (from the newest day file's last complete line)."""
        for path in reversed(self.files()):
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

    def newest_checked(self, verifiers: Iterable[Verifier]) -> tuple[str, Checkpoint] | None:
        """The newest checkpoint as a note to keep, and its body, checked: the last entry of
        ``checkpoints/``, its note opened with ``verifiers`` (signature checked, body parsed),
        its ``size`` and ``root`` those of the note, and ``<root>/checkpoint`` holding that
        very note. ``None`` before the first checkpoint; anything that does not check out
        raises an ``IntegrityError`` that says what and where."""
        latest = self.latest()  # a damaged last line raises NoteError naming its file:line
        try:
            plain: bytes | None = self.newest.read_bytes()
        except FileNotFoundError:
            plain = None
        if latest is None:
            if plain is None:
                return None
            raise IntegrityError(
                f"{self.newest} holds a note, but {self.dir} holds no checkpoint entry to "
                "check it against (were checkpoints deleted? run `rtrace verify`)"
            )
        where = f"the newest checkpoint ({latest.file}:{latest.line})"
        try:
            body = open_checkpoint(latest.note, verifiers)
        except IntegrityError as exc:
            raise IntegrityError(f"{where} does not check out: {exc}") from exc
        if (body.size, body.root) != (latest.size, latest.root):
            raise IntegrityError(
                f"{where}: its size/root fields differ from its signed note (note: size "
                f"{body.size})"
            )
        if plain != latest.note.encode():
            state = "is missing" if plain is None else "holds another note (damaged or edited)"
            raise IntegrityError(
                f"{self.newest} {state}: it should be a copy of {where}, signed for "
                f"{body.size} records (run `rtrace verify`; the log's writer replaces it when "
                "it signs its next checkpoint)"
            )
        return latest.note, body

    def origin(self) -> str | None:
        """The origin this log signs as, from its own files, or ``None`` before it has one.

        The name of the last verifier key in ``checkpoints/vkey`` (the key it signs with now:
        published before the first record, and by ``rtrace keys rotate --origin``, which moves
        a log to a new origin), else the origin line of the newest checkpoint. Read leniently
        (a malformed key line still names its key); nothing is written.
        """
        try:
            keys = self.vkey.read_text(errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            keys = ""
        names = [line.split("+", 1)[0].strip() for line in keys.splitlines() if "+" in line]
        if names and names[-1]:
            return names[-1]
        text = self.newest_note()
        if text is None:
            return None
        first = text.split("\n", 1)[0]
        return first or None

    def verifiers(self) -> list[Verifier]:
        """The verifier keys this log published.

        Raises ``NoteError`` naming the file and line when ``checkpoints/vkey`` is not UTF-8
        text or holds a line that is not a verifier key (a damaged or forged file)."""
        try:
            raw = self.vkey.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return []
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise NoteError(f"{self.vkey} is not UTF-8 text (damaged or altered)") from None
        found = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                found.append(Verifier.parse(line))
            except (NoteError, ValueError) as exc:
                raise NoteError(f"{self.vkey} line {n} is not a verifier key: {exc}") from exc
        return found

    def publish(self, verifier: Verifier) -> None:
        """Add a verifier key to ``checkpoints/vkey`` (kept forever, across rotations)."""
        if any(str(v) == str(verifier) for v in self.verifiers()):
            return
        self.dir.mkdir(exist_ok=True)
        append_whole(self.vkey, f"{verifier}\n".encode())

    def repair(self) -> None:
        """Mend each checkpoint file a crash left without its final newline (writer only)."""
        for path, cut, length in self.torn():
            with open(path, "rb") as fh:
                fh.seek(cut)
                fragment = fh.read(length)
            try:
                _entry(fragment, str(path), 0)
            except NoteError:
                qpath = quarantine(self.layout, f"checkpoints-{path.name}.{cut}", fragment)
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
                append_whole(path, b"\n")
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
                "root": str(Hash(checkpoint.root)),
                "datetime_utc": when,
                "note": note,
            },
            option=orjson.OPT_SORT_KEYS,
        )
        path = self.layout.checkpoint_file(when[:10])
        if path.exists() and path.stat().st_size and not ends_with_newline(path):
            self.repair()  # another writer crashed mid-line: never weld onto its bytes
        append_whole(path, line + b"\n")
        self.write_newest(note)

    def write_newest(self, note: str) -> None:
        """Replace ``<root>/checkpoint`` with ``note`` atomically (a temporary file renamed)."""
        tmp = self.layout.newest_note_tmp
        try:
            tmp.unlink(missing_ok=True)  # a leftover, or a link planted to be written through
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
            with os.fdopen(os.open(tmp, flags, 0o644), "w") as fh:
                fh.write(note)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.newest)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.root)


def _entry(raw: bytes, file: str, line: int) -> Entry:
    try:
        obj = orjson.loads(raw)
        return Entry(
            int(obj["size"]),
            Hash.parse(obj["root"], "root", error=NoteError),
            str(obj["datetime_utc"]),
            str(obj["note"]),
            file,
            line,
        )
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise NoteError(
            f"{file}:{line}: not a checkpoint entry ({exc}): the checkpoints file is damaged "
            "(run `rtrace verify`)"
        ) from exc
