"""C2SP signed notes with Ed25519 (https://c2sp.org/signed-note), byte-compatible with Go's
``golang.org/x/mod/sumdb/note``.

A note is UTF-8 text ending in a newline, a blank line, then one signature line per signer::

    — <key name> <base64(4-byte key id || 64-byte Ed25519 signature)>\\n

The key id is the first 4 bytes of ``SHA-256(<key name> || "\\n" || 0x01 || <public key>)``.
Keys are written as Go writes them: the verifier key ``<name>+<8 hex id>+<base64(0x01 ||
public key)>`` and the signer key ``PRIVATE+KEY+<name>+<8 hex id>+<base64(0x01 || seed)>``.
Ed25519 is deterministic, so signing a text gives the same bytes every time.

Notes are parsed exactly as Go's ``note.Open`` parses them: valid UTF-8 (bytes or a ``str``
without lone surrogates), no control character but ``\n`` (so no CRLF), signature names
without white space or ``+``, canonical standard base64, at most 100 signature lines, and each
distinct signature by a known key checked once.
Tests: ``tests/test_note.py`` (the Go package's own example key and note, byte for byte) and
``tests/test_note_differential.py`` (generated notes, the same verdicts as Go's own code).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import NoteError, SignatureError, UnknownKey

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def _private(seed: bytes) -> Ed25519PrivateKey:
    # cryptography loads on first use, not with the package: most commands never sign.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(seed)


__all__ = [
    "Signature",
    "Signer",
    "Verifier",
    "as_verifiers",
    "check_key_name",
    "open_note",
    "sign_note",
]

ALG_ED25519 = 0x01
_DASH = "\u2014"  # the em dash that starts every signature line
MAX_SIGNATURES = 100  # Go's note.Open refuses more signature lines than this

# Go's unicode.IsSpace: the Unicode White_Space property (Python's str.isspace differs a little).
_GO_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
)
_HEX_ID = re.compile(r"[0-9a-fA-F]{8}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def key_id(name: str, public: bytes) -> int:
    """The 32-bit key id of an Ed25519 public key under ``name``."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public).digest()
    return int.from_bytes(digest[:4], "big")


def check_key_name(name: str) -> None:
    """Raise ``NoteError`` unless ``name`` can name a key (and so a log's origin): not empty,
    no space or ``+``, nothing unprintable (C2SP signed-note key names)."""
    if not name or any(c in name for c in "+ \n\t") or not name.isprintable():
        raise NoteError(f"invalid key name {name!r}: no spaces, plus signs or control characters")


def _valid_signer_name(name: str) -> bool:
    """Go's ``isValidName``: not empty, no white space (Unicode's, as Go counts it), no ``+``."""
    return bool(name) and "+" not in name and not any(c in _GO_SPACE for c in name)


def _b64decode(text: str, what: str) -> bytes:
    """Standard base64 with padding, as Go's ``base64.StdEncoding`` reads it (no white space,
    no missing or extra padding)."""
    if not _BASE64.fullmatch(text):
        raise NoteError(f"{what} is not valid base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError(f"{what} is not valid base64") from exc


def note_text(note: str | bytes) -> str:
    """A note as text, refused unless it is valid UTF-8 without control characters but ``\n``.

    Bytes are decoded strictly; a ``str`` must encode to UTF-8 (no lone surrogates).
    """
    if isinstance(note, bytes):
        try:
            text = note.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteError(f"note is not valid UTF-8 (byte {exc.start})") from None
    else:
        text = note
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise NoteError(f"note is not valid UTF-8 (character {exc.start})") from None
    bad = _CONTROL.search(text)
    if bad:
        raise NoteError(
            f"note holds the control character U+{ord(bad.group()):04X} at character "
            f"{bad.start()} (only \\n may end a line)"
        )
    return text


@dataclass(frozen=True)
class Verifier:
    """A named Ed25519 public key that can check signatures."""

    name: str
    id: int
    public: bytes

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """Read a verifier key ``<name>+<hex id>+<base64(0x01 || key)>``; check its id."""
        parts = vkey.strip().split("+", 2)  # the base64 may itself contain "+"
        if len(parts) != 3:
            raise NoteError(f"malformed verifier key {vkey!r}")
        name, hex_id, b64 = parts
        check_key_name(name)
        raw = _b64decode(b64, "verifier key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError("verifier key is not an Ed25519 key")
        if not _HEX_ID.fullmatch(hex_id):  # int(x, 16) also takes non-ASCII digits and "_"
            raise NoteError(f"verifier key id {hex_id[:16]!r} is not 8 hex digits")
        given = int(hex_id, 16)
        if given != key_id(name, raw[1:]):
            raise NoteError(f"verifier key id {hex_id} does not match the key")
        return cls(name, given, raw[1:])

    def __str__(self) -> str:
        raw = bytes([ALG_ED25519]) + self.public
        return f"{self.name}+{self.id:08x}+{base64.b64encode(raw).decode()}"

    def verify(self, text: bytes, signature: bytes) -> None:
        """Raise ``SignatureError`` unless ``signature`` signs ``text`` under this key."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, text)
        except InvalidSignature:
            raise SignatureError(
                f"bad signature by {self.name} ({self.id:08x})", self.name, self.id
            ) from None


@dataclass(frozen=True)
class Signer:
    """A named Ed25519 private key."""

    name: str
    seed: bytes

    @classmethod
    def generate(cls, name: str) -> Signer:
        """A new random key."""
        check_key_name(name)
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(name, Ed25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def parse(cls, skey: str) -> Signer:
        """Read ``PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>``; check its id."""
        parts = skey.strip().split("+", 4)  # the base64 may itself contain "+"
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("malformed signer key (expected PRIVATE+KEY+name+id+key)")
        name, hex_id, b64 = parts[2:]
        check_key_name(name)
        raw = _b64decode(b64, "signer key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError("signer key is not an Ed25519 key")
        signer = cls(name, raw[1:])
        if hex_id != f"{signer.verifier.id:08x}":
            raise NoteError(f"signer key id {hex_id} does not match the key")
        return signer

    @property
    def verifier(self) -> Verifier:
        """The matching verifier key."""
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        public = _private(self.seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return Verifier(self.name, key_id(self.name, public), public)

    def __str__(self) -> str:
        raw = bytes([ALG_ED25519]) + self.seed
        return f"PRIVATE+KEY+{self.name}+{self.verifier.id:08x}+{base64.b64encode(raw).decode()}"

    def sign(self, text: bytes) -> bytes:
        """The Ed25519 signature of ``text``."""
        return _private(self.seed).sign(text)


@dataclass(frozen=True)
class Signature:
    """One signature line of a note."""

    name: str
    id: int
    signature: bytes


def as_verifiers(
    keys: str | Verifier | Iterable[str | Verifier] | None,
) -> list[Verifier] | None:
    """Verifier keys from what a caller holds: one key, text of keys one per line (a vkey
    file's content), or many of either; ``None`` stays ``None`` (no keys given).

    Raises ``NoteError`` for a line that is not a verifier key.
    """
    if keys is None:
        return None
    items = [keys] if isinstance(keys, str | Verifier) else list(keys)
    out = []
    for item in items:
        if isinstance(item, Verifier):
            out.append(item)
        else:
            out.extend(Verifier.parse(line) for line in item.splitlines() if line.strip())
    return out


def sign_note(text: str, signers: Iterable[Signer]) -> str:
    """The signed note: ``text`` (ending in a newline), a blank line, a signature line each."""
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    body = text.encode()
    lines = []
    for signer in signers:
        blob = signer.verifier.id.to_bytes(4, "big") + signer.sign(body)
        lines.append(f"{_DASH} {signer.name} {base64.b64encode(blob).decode()}\n")
    if not lines:
        raise NoteError("a signed note needs at least one signer")
    return text + "\n" + "".join(lines)


def split_note(note: str | bytes) -> tuple[str, list[Signature]]:
    """The text and the signature lines of a note, parsed strictly (nothing verified).

    Repeated identical signature lines are kept once.
    """
    note = note_text(note)
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise NoteError("malformed note: no blank line before the signatures")
    text, block = note[: cut + 1], note[cut + 2 :]
    lines = block.split("\n")[:-1]
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has {len(lines)} signature lines, over the limit of 100")
    signatures: list[Signature] = []
    for line in lines:
        if not line.startswith(_DASH + " "):
            raise NoteError(f"malformed signature line {line[:80]!r}")
        name, _, b64 = line[2:].partition(" ")
        if not _valid_signer_name(name):
            raise NoteError(f"malformed signature line {line[:80]!r}: bad key name")
        blob = _b64decode(b64, "signature")
        if len(blob) < 5:
            raise NoteError("signature too short")
        sig = Signature(name, int.from_bytes(blob[:4], "big"), blob[4:])
        if sig not in signatures:
            signatures.append(sig)
    if not signatures:
        raise NoteError("note has no signatures")
    return text, signatures


def open_note(note: str | bytes, verifiers: Iterable[Verifier]) -> tuple[str, list[Verifier]]:
    """Check a note's signatures; return its text and the known keys that signed it.

    Raises ``NoteError`` for a malformed note, ``SignatureError`` if a signature by a known
    key is bad, and ``UnknownKey`` if no signature is by a known key (the note may still be
    genuine, but nobody here can tell). As in Go, only the first signature line of each known
    key is checked; later ones by the same key are ignored.
    """
    text, signatures = split_note(note)
    known = {(v.name, v.id): v for v in verifiers}
    good: list[Verifier] = []
    for sig in signatures:
        verifier = known.get((sig.name, sig.id))
        if verifier is None or verifier in good:
            continue
        verifier.verify(text.encode(), sig.signature)
        good.append(verifier)
    if not good:
        first = signatures[0]
        raise UnknownKey(
            f"no known key signed this note (signed by {first.name} {first.id:08x})",
            first.name,
            first.id,
        )
    return text, good
