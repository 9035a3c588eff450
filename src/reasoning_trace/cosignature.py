"""Checkpoint cosignatures: C2SP tlog-cosignature, the Ed25519 ``cosignature/v1`` type
(https://c2sp.org/tlog-cosignature, sections "Format" and "Ed25519 signed message").

A witness states, with a cosignature, that as of a time the largest consistent tree it saw
for a log has this root. The signed message is::

    cosignature/v1\\n
    time <POSIX seconds, ASCII decimal>\\n
    <the checkpoint body: origin, size, root, any extension lines, each ended by \\n>

and the signature is a note signature line (C2SP signed-note) whose bytes are
``key id (4) || timestamp (8, big-endian) || Ed25519 signature (64)``, with the key id
``SHA-256(<name> || "\\n" || 0x04 || <32-byte public key>)[:4]``. A cosigner's verifier key is
written like a note verifier key with the type byte 0x04: ``<name>+<8 hex id>+<base64(0x04 ||
key)>``; its signer key (our witness's key file) ``PRIVATE+KEY+<name>+<8 hex id>+<base64(0x04
|| seed)>``.

A cosigned note is the log's signed note with the cosignature lines added after its own
signature: a verifier that knows only the log's key ignores them (signed-note: unknown keys
are ignored), so Go's ``note.Open`` keeps accepting the note.
Tests: ``tests/test_witness.py`` (and ``tests/test_witness_interop.py``: aics-tlog and
aics-witness agree).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import NoteError, SignatureError
from .note import Signature, check_key_name, split_note

__all__ = [
    "ALG_COSIGNATURE",
    "Cosignature",
    "Cosigner",
    "CosignerKey",
    "cosignature_message",
    "cosignatures",
    "parse_signature_lines",
    "signature_line",
    "with_cosignatures",
]

ALG_COSIGNATURE = 0x04
_DASH = "\u2014"
MAX_TIMESTAMP = (1 << 63) - 1


def _key_id(name: str, public: bytes) -> int:
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ALG_COSIGNATURE]) + public).digest()
    return int.from_bytes(digest[:4], "big")


def _b64(text: str, what: str) -> bytes:
    """Canonical standard base64 with padding (as signed-note keys are written)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError(f"{what} is not valid base64") from exc
    if base64.b64encode(raw).decode() != text:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def cosignature_message(body: str, timestamp: int) -> bytes:
    """The bytes an Ed25519 cosignature signs (tlog-cosignature "Ed25519 signed message")."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"cosignature time {timestamp} is out of range")
    if not body.endswith("\n"):
        raise NoteError("a checkpoint body ends with a newline")
    return f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()


def signature_line(name: str, key_id: int, blob: bytes) -> str:
    """One note signature line: ``— <name> <base64(key id || blob)>\\n``."""
    return f"{_DASH} {name} {base64.b64encode(key_id.to_bytes(4, 'big') + blob).decode()}\n"


@dataclass(frozen=True)
class CosignerKey:
    """A witness's cosigner verifier key (type 0x04): checks its ``cosignature/v1`` lines."""

    name: str
    id: int
    public: bytes

    @classmethod
    def parse(cls, vkey: str) -> CosignerKey:
        """Read ``<name>+<hex id>+<base64(0x04 || key)>`` and check its id; ``NoteError``
        otherwise (a log's own 0x01 key is refused here: it cannot cosign)."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError(f"malformed cosigner key {vkey[:80]!r} (expected NAME+HEXID+BASE64)")
        name, hex_id, b64 = parts
        check_key_name(name)
        raw = _b64(b64, "cosigner key")
        if len(raw) != 33:
            raise NoteError("cosigner key is not an Ed25519 key")
        if raw[0] != ALG_COSIGNATURE:
            raise NoteError(
                f"key {name} has type 0x{raw[0]:02x}, not a cosigner key (0x04): "
                "a log's own verifier key cannot cosign"
            )
        if len(hex_id) != 8 or any(c not in "0123456789abcdefABCDEF" for c in hex_id):
            raise NoteError(f"cosigner key id {hex_id[:16]!r} is not 8 hex digits")
        if int(hex_id, 16) != _key_id(name, raw[1:]):
            raise NoteError(f"cosigner key id {hex_id} does not match the key")
        return cls(name, int(hex_id, 16), raw[1:])

    def __str__(self) -> str:
        raw = bytes([ALG_COSIGNATURE]) + self.public
        return f"{self.name}+{self.id:08x}+{base64.b64encode(raw).decode()}"

    def verify(self, body: str, blob: bytes) -> int:
        """The time of a cosignature ``blob`` (timestamp || signature) over the checkpoint
        ``body``; ``SignatureError`` unless this key made it."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        if len(blob) != 72:
            raise SignatureError(
                f"cosignature by {self.name} is {len(blob)} bytes, not 72", self.name, self.id
            )
        timestamp = int.from_bytes(blob[:8], "big")
        try:
            message = cosignature_message(body, timestamp)
            Ed25519PublicKey.from_public_bytes(self.public).verify(blob[8:], message)
        except (InvalidSignature, NoteError):
            raise SignatureError(
                f"bad cosignature by {self.name} ({self.id:08x})", self.name, self.id
            ) from None
        return timestamp


@dataclass(frozen=True)
class Cosigner:
    """A witness's cosigning key (an Ed25519 seed under a name)."""

    name: str
    seed: bytes

    @classmethod
    def generate(cls, name: str) -> Cosigner:
        """A new random cosigning key named ``name`` (a schema-less URL, by the standard)."""
        check_key_name(name)
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(name, Ed25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def parse(cls, skey: str) -> Cosigner:
        """Read ``PRIVATE+KEY+<name>+<hex id>+<base64(0x04 || seed)>``; check its id."""
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("malformed cosigner key file (expected PRIVATE+KEY+name+id+key)")
        name, hex_id, b64 = parts[2:]
        check_key_name(name)
        raw = _b64(b64, "cosigner private key")
        if len(raw) != 33 or raw[0] != ALG_COSIGNATURE:
            raise NoteError("not an Ed25519 cosigner private key (type 0x04)")
        signer = cls(name, raw[1:])
        if hex_id != f"{signer.key.id:08x}":
            raise NoteError(f"cosigner key id {hex_id} does not match the key")
        return signer

    @property
    def key(self) -> CosignerKey:
        """The matching cosigner verifier key."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        public = Ed25519PrivateKey.from_private_bytes(self.seed).public_key().public_bytes_raw()
        return CosignerKey(self.name, _key_id(self.name, public), public)

    def __str__(self) -> str:
        raw = bytes([ALG_COSIGNATURE]) + self.seed
        return f"PRIVATE+KEY+{self.name}+{self.key.id:08x}+{base64.b64encode(raw).decode()}"

    def cosign(self, body: str, timestamp: int) -> str:
        """The cosignature line of the checkpoint ``body`` at ``timestamp`` (POSIX seconds)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        signature = Ed25519PrivateKey.from_private_bytes(self.seed).sign(
            cosignature_message(body, timestamp)
        )
        return signature_line(self.name, self.key.id, timestamp.to_bytes(8, "big") + signature)


@dataclass(frozen=True)
class Cosignature:
    """A cosignature that verified: by which witness key, when, and its note line."""

    key: CosignerKey
    timestamp: int
    line: str


def parse_signature_lines(text: str) -> list[Signature]:
    """The signature lines of a tlog-witness 200 response (one or more note signature lines,
    each ended by ``\\n``), parsed as strictly as a note's; ``NoteError`` otherwise."""
    if not text.endswith("\n") or text.startswith("\n"):
        raise NoteError("a cosignature response is one or more signature lines, each ended by \\n")
    _, signatures = split_note("x\n\n" + text)
    return signatures


def cosignatures(note: str, keys: Iterable[CosignerKey]) -> list[Cosignature]:
    """The valid cosignatures on ``note`` by the witness keys ``keys``, one per key.

    Lines by other keys are ignored (signed-note); a line by a known key that does not verify
    raises ``SignatureError`` (the note was tampered with, or the witness misbehaved).
    """
    text, signatures = split_note(note)
    known = {(k.name, k.id): k for k in keys}
    found: dict[tuple[str, int], Cosignature] = {}
    for sig in signatures:
        key = known.get((sig.name, sig.id))
        if key is None or (key.name, key.id) in found:
            continue
        timestamp = key.verify(text, sig.signature)
        line = signature_line(sig.name, sig.id, sig.signature)
        found[(key.name, key.id)] = Cosignature(key, timestamp, line)
    return list(found.values())


def with_cosignatures(note: str, lines: Iterable[str]) -> str:
    """``note`` with the signature ``lines`` added after its own, each once."""
    if not note.endswith("\n"):
        raise NoteError("a signed note ends with a newline")
    have = set(note.split("\n\n")[-1].splitlines(keepends=True))
    out = note
    for line in lines:
        if line not in have:
            out += line
            have.add(line)
    return out
