"""The wire format of C2SP tlog-witness (https://c2sp.org/tlog-witness, "add-checkpoint"),
shared by our witness (``witness``) and our client (``witness_client``).

Request body of ``POST <submission prefix>/add-checkpoint``, every line ended by ``\\n``::

    old <size of the witness's latest cosigned checkpoint, ASCII decimal, no leading zero>
    <base64 hash>            zero to 63 lines: the RFC 9162 consistency proof from old
    <empty line>
    <the signed checkpoint note>

Answers: 200 with one or more cosignature lines (``cosignature``), 409 with the witness's
latest cosigned size as ``<size>\\n`` and ``Content-Type: text/x.tlog.size``, 400 malformed,
403 no trusted signature, 404 unknown origin, 422 a consistency proof that does not verify.
The monitoring read (not yet fixed by the standard; as aics-witness serves it) is
``GET <prefix>/<hex SHA-256 of the origin>/checkpoint``: the newest cosigned checkpoint.
Tests: ``tests/test_witness.py``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import NoteError

__all__ = [
    "MAX_PROOF_LINES",
    "SIZE_TYPE",
    "AddCheckpoint",
    "format_add_checkpoint",
    "format_size",
    "origin_hash",
    "parse_add_checkpoint",
    "parse_size",
]

MAX_PROOF_LINES = 63
SIZE_TYPE = "text/x.tlog.size"
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")


@dataclass(frozen=True)
class AddCheckpoint:
    """An add-checkpoint request: the old size, the consistency proof, the signed note."""

    old: int
    proof: tuple[bytes, ...]
    note: bytes


def _size(text: str, what: str) -> int:
    if not _SIZE.fullmatch(text) or int(text) >= 1 << 63:
        raise NoteError(f"{what} {text[:24]!r} is not an ASCII decimal size")
    return int(text)


def format_add_checkpoint(old: int, proof: Sequence[bytes], note: str | bytes) -> bytes:
    """The request body for ``note`` sent to a witness that last cosigned ``old`` records."""
    data = note.encode() if isinstance(note, str) else note
    if len(proof) > MAX_PROOF_LINES:
        raise NoteError(f"a consistency proof has at most {MAX_PROOF_LINES} hashes")
    lines = [f"old {old}\n".encode()]
    lines += [base64.b64encode(h) + b"\n" for h in proof]
    return b"".join(lines) + b"\n" + data


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Parse a request body; ``NoteError`` (a 400) when it does not follow the format."""
    head, sep, note = body.partition(b"\n\n")
    if not sep:
        raise NoteError("no empty line between the old size and proof and the checkpoint")
    lines = head.split(b"\n")
    if not lines[0].startswith(b"old "):
        raise NoteError("the first line must be 'old <size>'")
    try:
        old = _size(lines[0][4:].decode("ascii"), "old size")
    except UnicodeDecodeError:
        raise NoteError("the old size line is not ASCII") from None
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise NoteError(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for raw in lines[1:]:
        try:
            digest = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise NoteError("a consistency proof line is not base64") from None
        if len(digest) != 32 or base64.b64encode(digest) != raw:
            raise NoteError("a consistency proof line is not the base64 of a 32-byte hash")
        proof.append(digest)
    if not note.endswith(b"\n"):
        raise NoteError("the checkpoint must end with a newline")
    return AddCheckpoint(old, tuple(proof), note)


def format_size(size: int) -> bytes:
    """A 409 answer's body: the witness's latest cosigned size and a newline."""
    return f"{size}\n".encode()


def parse_size(body: bytes) -> int:
    """The size in a 409 answer (``text/x.tlog.size``); ``NoteError`` otherwise."""
    if not body.endswith(b"\n"):
        raise NoteError("a text/x.tlog.size body ends with a newline")
    try:
        return _size(body[:-1].decode("ascii"), "tree size")
    except UnicodeDecodeError:
        raise NoteError("a text/x.tlog.size body is ASCII") from None


def origin_hash(origin: str) -> str:
    """The lowercase hex SHA-256 of an origin: its path element in the monitoring read."""
    return hashlib.sha256(origin.encode()).hexdigest()
