"""A witness of our own: the C2SP tlog-witness state machine (https://c2sp.org/tlog-witness,
"add-checkpoint") with its state on disk; ``witness_server`` puts it on HTTP.

For each log it trusts (a log verifier key; the log's origin is the key's name) the witness
keeps the newest checkpoint it cosigned, and cosigns a new one (C2SP tlog-cosignature,
``cosignature/v1``) only when the log's signature verifies and the consistency proof from
that checkpoint does. Its folder::

    witness.key                      its cosigning key, PRIVATE+KEY+<name>+<id>+<0x04 key>, 0600
    logs                             the log verifier keys it trusts, one a line
    lock                             flock'd while a witness serves from this folder
    state/<sha256(origin)>.json      per log: origin, size, root, the cosigned note, its time
    evidence/<sha256(origin)>.jsonl  every refused request whose log signature verified (422,
                                     409 another root at the cosigned size, 409 a smaller
                                     checkpoint than cosigned: a rollback)

Its promises: the new (size, root) is on disk (a temporary file fsynced, renamed, the folder
fsynced) before the cosignature leaves; the check of the old size and the write are one step
under a lock, so two racing requests can never roll the state back (the race the standard
describes); it never cosigns a tree smaller than, or of the same size and another root than,
what it cosigned, across restarts too (the state is read back from disk, and a state file it
cannot read stops that log, never resets it); its cosignature times never go backwards for a
log. Answers follow the standard's order: 400 malformed, 404 unknown origin, 403 no trusted
signature, 400 old size above the checkpoint's, 409 (``text/x.tlog.size``) another old size,
422 a proof that does not verify, 409 an equal size with another root (v1.0.0 of the standard;
aics-witness answers 422, v1.1.0), then 200 with the cosignature line.
Tests: ``tests/test_witness.py``, ``tests/test_witness_interop.py``.
"""

from __future__ import annotations

import base64
import fcntl
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from .checkpoint import Checkpoint
from .cosignature import Cosigner, CosignerKey, signature_line
from .errors import NoteError, ProofError, SignatureError, StorageError, UsageError
from .layout import fsync_dir
from .note import Verifier, open_note, split_note
from .proof import verify_consistency
from .record import format_utc
from .tlog_witness import SIZE_TYPE, format_size, origin_hash, parse_add_checkpoint
from .tree import EMPTY_ROOT, Hash
from .whole_lines import append_whole

__all__ = ["Answer", "LogState", "Witness"]

TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Answer:
    """The witness's answer to one request: HTTP status, body, content type."""

    status: int
    body: bytes
    content_type: str = TEXT


@dataclass(frozen=True)
class LogState:
    """The newest checkpoint the witness cosigned for a log."""

    origin: str
    size: int
    root: bytes
    note: str  # the log's note with this witness's cosignature
    timestamp: int


def _refuse(status: int, message: str) -> Answer:
    return Answer(status, (message + "\n").encode())


class Witness:
    """The witness whose folder is ``state_dir`` (see the module docstring).

    ``serving``: take the folder's lock (one serving witness per folder; ``UsageError``
    when another holds it). ``clock``: POSIX seconds, for the cosignature times.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        serving: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dir = Path(state_dir)
        self.clock = clock
        key_file = self.dir / "witness.key"
        try:
            self.cosigner = Cosigner.parse(key_file.read_text())
        except FileNotFoundError:
            raise UsageError(
                f"no witness in {self.dir} (create one: rtrace witness init --state {self.dir} "
                "--name NAME)"
            ) from None
        except (OSError, NoteError) as exc:
            raise UsageError(f"{key_file}: not a usable witness key ({exc})") from exc
        self.key: CosignerKey = self.cosigner.key
        self._mutex = threading.Lock()
        self._lock_fd: int | None = None
        if serving:
            fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise UsageError(f"another witness is serving from {self.dir}") from None
            self._lock_fd = fd

    # --- set-up ----------------------------------------------------------------------------

    @staticmethod
    def init(state_dir: str | os.PathLike[str], name: str) -> CosignerKey:
        """Create the witness folder and its key (mode 0600), or keep the one there; return
        its cosigner verifier key. ``UsageError`` when a key of another name exists."""
        folder = Path(state_dir)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / "witness.key"
        if path.exists():
            existing = Witness(folder).key
            if existing.name != name:
                raise UsageError(
                    f"{path} is the witness {existing.name!r}, not {name!r} (a new name is a "
                    "new witness: use another folder)"
                )
            return existing
        cosigner = Cosigner.generate(name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{cosigner}\n")
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(folder)
        return cosigner.key

    def add_log(self, vkey: str) -> Verifier:
        """Trust a log's verifier key (its name is the log's origin); kept once."""
        key = Verifier.parse(vkey)
        if str(key) not in [str(k) for k in self.logs()]:
            append_whole(self.dir / "logs", f"{key}\n".encode())
        return key

    def logs(self) -> list[Verifier]:
        """The log verifier keys this witness trusts (read afresh: ``add_log`` while serving
        takes effect at once)."""
        try:
            text = (self.dir / "logs").read_text()
        except FileNotFoundError:
            return []
        return [Verifier.parse(line) for line in text.splitlines() if line.strip()]

    # --- state -----------------------------------------------------------------------------

    def _state_path(self, origin: str) -> Path:
        return self.dir / "state" / f"{origin_hash(origin)}.json"

    def state(self, origin: str) -> LogState | None:
        """The newest checkpoint cosigned for ``origin``; ``StorageError`` when its state file
        cannot be read (never taken as "nothing cosigned": that would let a fork through)."""
        return self._read_state(self._state_path(origin))

    def _read_state(self, path: Path) -> LogState | None:
        try:
            obj = orjson.loads(path.read_bytes())
            return LogState(
                str(obj["origin"]),
                int(obj["size"]),
                Hash.parse(obj["root"], "root"),
                str(obj["note"]),
                int(obj["timestamp"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"the witness state {path} cannot be read ({exc})") from exc

    def _persist(self, state: LogState) -> None:
        path = self._state_path(state.origin)
        path.parent.mkdir(exist_ok=True)
        data = orjson.dumps(
            {
                "origin": state.origin,
                "size": state.size,
                "root": str(Hash(state.root)),
                "note": state.note,
                "timestamp": state.timestamp,
            }
        )
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)

    def latest(self, hex_hash: str) -> str | None:
        """The newest cosigned note of the log whose origin hashes to ``hex_hash`` (the
        monitoring read), or ``None``."""
        if len(hex_hash) != 64 or any(c not in "0123456789abcdef" for c in hex_hash):
            return None
        state = self._read_state(self.dir / "state" / f"{hex_hash}.json")
        return None if state is None else state.note

    def evidence(self, origin: str) -> list[dict[str, object]]:
        """The refused requests kept for ``origin``, oldest first."""
        try:
            data = (self.dir / "evidence" / f"{origin_hash(origin)}.jsonl").read_bytes()
        except FileNotFoundError:
            return []
        return [orjson.loads(line) for line in data.splitlines() if line.strip()]

    def _keep_evidence(self, origin: str, status: int, reason: str, body: bytes) -> None:
        folder = self.dir / "evidence"
        folder.mkdir(exist_ok=True)
        entry = {
            "received": format_utc(int(self.clock() * 1e6)),
            "status": status,
            "reason": reason,
            "request": base64.b64encode(body).decode(),
        }
        append_whole(folder / f"{origin_hash(origin)}.jsonl", orjson.dumps(entry) + b"\n")

    # --- add-checkpoint --------------------------------------------------------------------

    def add_checkpoint(self, body: bytes) -> Answer:
        """Answer one add-checkpoint request (see the module docstring for the order)."""
        try:
            request = parse_add_checkpoint(body)
            text, signatures = split_note(request.note)
            checkpoint = Checkpoint.parse(text)
        except NoteError as exc:
            return _refuse(400, f"malformed request: {exc}")
        keys = [k for k in self.logs() if k.name == checkpoint.origin]
        if not keys:
            return _refuse(404, f"unknown log origin {checkpoint.origin!r}")
        try:
            _, good = open_note(request.note, keys)
        except (SignatureError, NoteError) as exc:
            return _refuse(403, f"no valid signature by a trusted key of this log ({exc})")
        if request.old > checkpoint.size:
            return _refuse(400, "the old size is larger than the checkpoint's")
        trusted = {(k.name, k.id) for k in good}
        signed = (
            text
            + "\n"
            + "".join(
                signature_line(s.name, s.id, s.signature)
                for s in signatures
                if (s.name, s.id) in trusted
            )
        )
        with self._mutex:
            return self._check_and_cosign(
                request.old, request.proof, text, signed, checkpoint, body
            )

    def _check_and_cosign(
        self,
        old: int,
        proof: tuple[bytes, ...],
        text: str,
        signed: str,
        checkpoint: Checkpoint,
        body: bytes,
    ) -> Answer:
        """Under the lock: compare with the state, persist, cosign. ``text``: the checkpoint
        body; ``signed``: the note with only the log's signature lines that verified."""
        state = self.state(checkpoint.origin)
        known = 0 if state is None else state.size
        if old != known:
            if state is not None and checkpoint.size == known and checkpoint.root != state.root:
                reason = f"a checkpoint of the cosigned size {known} with another root"
                self._keep_evidence(checkpoint.origin, 409, reason, body)
            elif checkpoint.size < known:  # signed by the log: it was rolled back
                reason = f"a checkpoint of {checkpoint.size} records, fewer than cosigned ({known})"
                self._keep_evidence(checkpoint.origin, 409, reason, body)
            return Answer(409, format_size(known), SIZE_TYPE)
        if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
            return self._inconsistent(checkpoint, "size 0 without the empty tree's root", body)
        if old == 0:
            if proof:
                return self._inconsistent(checkpoint, "a proof sent from size 0", body)
        else:
            assert state is not None
            if old == checkpoint.size and checkpoint.root != state.root:
                reason = f"the cosigned size {old} with another root"
                self._keep_evidence(checkpoint.origin, 409, reason, body)
                return Answer(409, format_size(known), SIZE_TYPE)
            try:
                verify_consistency(old, checkpoint.size, state.root, checkpoint.root, proof)
            except ProofError as exc:
                return self._inconsistent(checkpoint, f"consistency from {old}: {exc}", body)
        now = int(self.clock())
        if state is not None:
            now = max(now, state.timestamp)  # a log's cosignature times never go backwards
        line = self.cosigner.cosign(text, now)
        note = signed + line
        self._persist(LogState(checkpoint.origin, checkpoint.size, checkpoint.root, note, now))
        return Answer(200, line.encode())

    def _inconsistent(self, checkpoint: Checkpoint, reason: str, body: bytes) -> Answer:
        self._keep_evidence(checkpoint.origin, 422, reason, body)
        return _refuse(422, reason)

    def close(self) -> None:
        """Let go of the folder's lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
