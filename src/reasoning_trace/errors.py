"""The exception tree of reasoning-trace.

Every error the library raises on purpose is a ``ReasoningTraceError``::

    ReasoningTraceError
    ├── RecordError (ValueError)      a decision that cannot be recorded as given (names the field)
    │   ├── RecordTooLarge            the line would exceed the size limit
    │   └── RedactionError            a redaction rule failed; nothing unredacted is written
    ├── ConflictError                 a caller-given id is already recorded with other content
    ├── NotFound (LookupError)        no decision with that id or seq
    ├── UsageError (ValueError)       an argument that cannot be used as given (names it)
    │   ├── QueryError                a filter or time expression that cannot be understood
    │   ├── OriginConflict            a configured origin is not the one the log already signs as
    │   └── SharedKeyError            a signing key that another log uses too, not shared on purpose
    ├── CorruptLine                   a day-file line that is not a record (file, line, offset)
    ├── StorageError (OSError)        the store could not read or durably write; nothing was written
    │   ├── LogRootMissing            the log's root directory vanished under a running log
    │   ├── UnreconciledLog           the day files do not reach what was acknowledged or signed
    │   ├── SigningKeyError           the signing key is missing, unreadable or malformed
    │   ├── ReplicationError          the JetStream server cannot be reached or refuses a request
    │   │   ├── StreamConfigError     the stream's settings would let replicated history go
    │   │   └── StreamLost            the stream no longer holds what was shipped to it
    │   └── WitnessUnavailable        a witness cannot be reached, or answered out of protocol
    └── IntegrityError                evidence that something is not what was signed
        ├── ProofError                an inclusion or consistency proof does not verify
        ├── SignatureError            a signed note's signature does not verify
        │   └── UnknownKey            ... because no known key has that name and id
        ├── NoteError (ValueError)    a signed note or checkpoint that is malformed
        ├── BundleError               an audit bundle that is empty, incomplete or malformed
        ├── ForkError                 a new checkpoint would not extend the last signed one
        ├── WitnessRefused            a witness refused to cosign: the log forked or rolled back
        └── QuorumError               fewer valid witness cosignatures than the policy asks

A refused or failed ``record`` never leaves a partial line and never consumes a ``seq``.
Backend errors (``OSError``, ``sqlite3.Error``) are translated at the boundary with
``raise ... from`` so the cause stays visible.
Tests: ``tests/test_errors.py`` (the drawing above is the classes' tree).
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = [
    "BundleError",
    "ConflictError",
    "CorruptLine",
    "ForkError",
    "IntegrityError",
    "LogRootMissing",
    "NotFound",
    "NoteError",
    "OriginConflict",
    "ProofError",
    "QueryError",
    "QuorumError",
    "ReasoningTraceError",
    "RecordError",
    "RecordTooLarge",
    "RedactionError",
    "ReplicationError",
    "SharedKeyError",
    "SignatureError",
    "SigningKeyError",
    "StorageError",
    "StoredDecision",
    "StreamConfigError",
    "StreamLost",
    "UnknownKey",
    "UnreconciledLog",
    "UsageError",
    "WitnessRefused",
    "WitnessUnavailable",
]


class ReasoningTraceError(Exception):
    """Base class of every error raised by reasoning-trace."""


class RecordError(ReasoningTraceError, ValueError):
    """A decision that cannot be recorded exactly as given.

    ``path`` is the dotted field path of the offending value (``subject.new_content``), or the
    top-level field name.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


class RecordTooLarge(RecordError):
    """The record's line would be longer than the log's ``max_line_bytes``."""


class RedactionError(RecordError):
    """A redaction rule raised or returned something unusable; the record is refused."""


class StoredDecision(Protocol):
    """What an error needs of a recorded decision (``record.Decision`` is one): this module
    stays below every other, so it names the shape, not the class."""

    @property
    def seq(self) -> int:
        """The decision's position in the log."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The decision as a JSON object."""
        ...


class ConflictError(ReasoningTraceError):
    """A caller-given ``id`` is already in the log with different content.

    ``stored`` is the decision already recorded under that id.
    """

    def __init__(self, decision_id: str, stored: StoredDecision) -> None:
        self.id = decision_id
        self.stored = stored
        super().__init__(
            f"id {decision_id!r} is already recorded (seq {stored.seq}) with different content"
        )


class NotFound(ReasoningTraceError, LookupError):
    """No decision with the given id or seq is in the log."""


class UsageError(ReasoningTraceError, ValueError):
    """An argument that cannot be used as given: a size outside the tree, an unknown sync
    mode, a malformed server URL. The message names the argument and what was wrong; the
    CLI answers it with exit code 2 and the HTTP API with 400."""


class QueryError(UsageError):
    """A query filter or time expression that cannot be understood."""


class OriginConflict(UsageError):
    """An origin was configured (``origin=``, ``$REASONING_TRACE_ORIGIN``, ``--origin``) for a
    log that already signs as another one: a log keeps its origin (SPEC section 4), so nothing
    is written or signed rather than forking it under a second name.

    ``root`` is the log, ``configured`` the origin asked for and ``source`` where it came from,
    ``origin`` the log's own (from its ``checkpoints/vkey`` and checkpoints).
    """

    def __init__(self, root: str, configured: str, source: str, origin: str) -> None:
        self.root = root
        self.configured = configured
        self.source = source
        self.origin = origin
        import shlex  # only for this message: importing the errors stays cheap

        super().__init__(
            f"{source} says origin {configured!r}, but the log at {root} already signs as "
            f"{origin!r} (its checkpoints/vkey and checkpoints say so); a log keeps its origin, "
            f"so nothing was written. Drop {source} or set it to {origin!r}; to move this log "
            f"to {configured!r} with a new key deliberately, run "
            f"`rtrace --dir {shlex.quote(root)} keys rotate --origin {shlex.quote(configured)}`"
        )


class SharedKeyError(UsageError):
    """A signing key that another log uses too, where sharing was not asked for (each log
    has a key of its own, SPEC section 4): a new log taking an existing key file, or
    ``rtrace keys rotate`` of a key that other logs sign with. Nothing was changed.

    ``origin`` is the key's name, ``key`` its file, ``others`` the other logs known to use it
    (from ``<key>.logs``; empty when none is known but the key file exists).
    """

    def __init__(self, message: str, *, origin: str, key: str, others: list[str]) -> None:
        self.origin = origin
        self.key = key
        self.others = others
        super().__init__(message)


class CorruptLine(ReasoningTraceError):
    """A line of a day file that is not a valid record.

    In an audit log a bad line is evidence, so it is reported with its place, never skipped
    in silence. ``line`` is 1-based when known (forward reads), else ``None``; ``offset`` is
    the byte offset of the line's start.
    """

    def __init__(self, file: str, offset: int, problem: str, line: int | None = None) -> None:
        self.file = file
        self.offset = offset
        self.line = line
        self.problem = problem
        where = f"{file}:{line}" if line is not None else f"{file} at byte {offset}"
        super().__init__(f"{where}: {problem}")


class StorageError(ReasoningTraceError, OSError):
    """The store could not read or durably write. Nothing was written and no seq was used."""

    def __init__(self, message: str, *args: Any) -> None:
        super().__init__(message, *args)
        self.message = message

    def __str__(self) -> str:
        return self.message


class LogRootMissing(StorageError):
    """The root directory of an open log no longer exists.

    The log does not silently start a new, empty history in its place: restore or recreate the
    directory, and the next record lands after whatever the day files then hold.
    """


class UnreconciledLog(StorageError):
    """The day files hold fewer records than the log already acknowledged or signed.

    Writing now would give an acknowledged (or signed) ``seq`` to another decision, so the
    writer refuses; the message names what it found. Restore the missing records (``rtrace
    verify`` lists them) before recording again. A reader cannot prove a record in a
    checkpoint the day files no longer reach either.
    """


class SigningKeyError(StorageError):
    """The log's signing key cannot be used: missing where the log already published verifier
    keys, unreadable, or not a signing key. ``path`` names the key file."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class ReplicationError(StorageError):
    """The JetStream server cannot be reached, or refused a request (the message says which)."""


class StreamConfigError(ReplicationError):
    """The stream exists with settings under which replicated history could expire or be
    deleted (an age, count or size limit, deletes or purges allowed, rollups): not used."""


class StreamLost(ReplicationError):
    """The stream no longer holds what a replicator shipped to it (deleted, re-created or
    emptied): an incident to report, never repaired silently."""


class WitnessUnavailable(StorageError):
    """A witness (C2SP tlog-witness) cannot be reached, or answered outside the protocol: the
    checkpoint stays queued and is sent again later, with back-off."""


class IntegrityError(ReasoningTraceError):
    """Evidence that data is not what was signed; carries what was expected and found."""


class ProofError(IntegrityError):
    """An inclusion or consistency proof does not verify (the message says which step)."""


class SignatureError(IntegrityError):
    """A signed note carries no valid signature by the given key.

    ``key_name`` and ``key_id`` identify the signature that failed.
    """

    def __init__(self, message: str, key_name: str = "", key_id: int | None = None) -> None:
        super().__init__(message)
        self.key_name = key_name
        self.key_id = key_id


class UnknownKey(SignatureError):
    """A signature by a key nobody published (no known key has its name and id)."""


class NoteError(IntegrityError, ValueError):
    """A signed note or checkpoint body that does not follow its format."""


class BundleError(IntegrityError):
    """An audit bundle that proves nothing as it is: empty, a file missing, a line that is
    not JSON (the message names the file and line)."""


class ForkError(IntegrityError):
    """The log would sign a checkpoint that does not extend the last one it signed.

    Signing stops: this is what a rewrite of signed history looks like.
    """


class WitnessRefused(IntegrityError):
    """A witness refused to cosign a checkpoint of this log (C2SP tlog-witness 409 naming a
    larger tree, or 422): the witness cosigned a tree this log no longer extends, so the log
    was rolled back or forked after the witness saw it. ``witness``, ``status`` and ``size``
    (the tree size the witness knows, where it said) are the evidence."""

    def __init__(
        self, message: str, witness: str = "", status: int = 0, size: int | None = None
    ) -> None:
        super().__init__(message)
        self.witness = witness
        self.status = status
        self.size = size


class QuorumError(IntegrityError):
    """A checkpoint carries fewer valid cosignatures by the witnesses a policy names than its
    quorum (C2SP tlog-cosignature); the message names who cosigned and who did not."""
