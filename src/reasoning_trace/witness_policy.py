"""Witness lists and quorum checks: which cosigners a log or an auditor trusts, and whether a
checkpoint carries enough of their cosignatures (C2SP tlog-cosignature; the witnesses speak
C2SP tlog-witness).

A witnesses file names one witness a line, ``#`` starting a comment::

    # cosigner verifier key (type 0x04)                       submission/monitoring URL
    witness.example/w1+0a1b2c3d+BASE64...                     http://127.0.0.1:7380
    witness.example/w2+4e5f6a7b+BASE64...                     https://w2.example/witness

The URL is what a log sends its checkpoints to (``witness_client``) and what ``rtrace verify
--trusted`` can read the witness's newest cosigned checkpoint from; an auditor's file may
leave it out. The same file serves the log (``<root>/witnesses``, or ``DecisionLog(witnesses=
...)``) and the auditor (``rtrace verify --witnesses FILE --quorum K``).

``check_quorum`` requires ``quorum`` distinct witnesses' valid cosignatures on a note the
log's key signed: it raises, carrying the evidence, and never returns ``False``.
Tests: ``tests/test_witness.py``, ``tests/test_witness_interop.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .checkpoint import Checkpoint, open_checkpoint
from .cosignature import Cosignature, CosignerKey, cosignatures
from .errors import NoteError, QuorumError, SignatureError, UsageError
from .note import Verifier

__all__ = [
    "WitnessConfig",
    "check_policy",
    "check_quorum",
    "check_url",
    "fetch_cosigned",
    "newest_witnessed",
    "parse_witnesses",
    "read_witnesses",
]


@dataclass(frozen=True)
class WitnessConfig:
    """One witness: its cosigner verifier key (its name is the key's) and, where known, the
    URL prefix of its tlog-witness endpoints."""

    key: CosignerKey
    url: str | None = None

    @property
    def name(self) -> str:
        """The witness's name, as its cosignature lines carry it."""
        return self.key.name

    @classmethod
    def of(cls, item: str | CosignerKey | WitnessConfig) -> WitnessConfig:
        """A witness from a line of a witnesses file, a key, or itself."""
        if isinstance(item, WitnessConfig):
            return item
        if isinstance(item, CosignerKey):
            return cls(item)
        return parse_witnesses(item)[0]


def check_url(url: str) -> str:
    """A witness URL prefix, checked: ``http`` or ``https``, a host, no query or fragment;
    returned without a trailing slash. ``UsageError`` otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"witness URL {url[:100]!r} is not http(s)://HOST[:PORT][/PREFIX]")
    if parts.query or parts.fragment:
        raise UsageError(f"witness URL {url[:100]!r} has a query or fragment")
    return url.rstrip("/")


def parse_witnesses(text: str, where: str = "witnesses") -> list[WitnessConfig]:
    """The witnesses a file's text names (see the module docstring); ``UsageError`` naming
    the line for a malformed one, or for a witness named twice."""
    found: list[WitnessConfig] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) > 2:
            raise UsageError(f"{where} line {n}: expected a cosigner key and at most one URL")
        try:
            key = CosignerKey.parse(fields[0])
        except NoteError as exc:
            raise UsageError(f"{where} line {n}: {exc}") from None
        try:
            url = check_url(fields[1]) if len(fields) == 2 else None
        except UsageError as exc:
            raise UsageError(f"{where} line {n}: {exc}") from None
        if any(w.key.name == key.name or w.key.public == key.public for w in found):
            raise UsageError(f"{where} line {n}: witness {key.name} is named twice")
        found.append(WitnessConfig(key, url))
    return found


def read_witnesses(path: str | os.PathLike[str]) -> list[WitnessConfig]:
    """The witnesses a file names; ``UsageError`` for a file that cannot be read or names
    none."""
    try:
        text = Path(path).read_bytes().decode()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    found = parse_witnesses(text, str(path))
    if not found:
        raise UsageError(f"{path}: names no witness (one cosigner key, then a URL, a line)")
    return found


def check_policy(witnesses: Sequence[CosignerKey], quorum: int) -> None:
    """``UsageError`` unless ``1 <= quorum <= len(witnesses)``: a policy that asks for no
    cosignature, or for more than its witnesses can give, states nothing."""
    if not 1 <= quorum <= len(witnesses):
        raise UsageError(
            f"a quorum of {quorum} needs between 1 and {len(witnesses)} (the witnesses named)"
        )


def check_quorum(
    note: str,
    log_keys: Iterable[Verifier],
    witnesses: Iterable[CosignerKey | WitnessConfig],
    quorum: int,
) -> tuple[Checkpoint, list[Cosignature]]:
    """The checkpoint ``note`` commits to and its valid cosignatures by ``witnesses``.

    The log's signature must verify with ``log_keys`` (``open_checkpoint``). Raises
    ``QuorumError`` when fewer than ``quorum`` distinct witnesses cosigned it,
    ``SignatureError`` when a cosignature line by a named witness does not verify, and
    ``UsageError`` for a quorum the witnesses cannot meet.
    """
    keys = [w.key if isinstance(w, WitnessConfig) else w for w in witnesses]
    check_policy(keys, quorum)
    checkpoint = open_checkpoint(note, log_keys)
    found = cosignatures(note, keys)
    if len(found) < quorum:
        have = ", ".join(c.key.name for c in found) or "none"
        missing = ", ".join(k.name for k in keys if all(c.key != k for c in found))
        raise QuorumError(
            f"the checkpoint of {checkpoint.size} records carries {len(found)} valid "
            f"cosignature(s) of the {quorum} required (cosigned by: {have}; not by: {missing})"
        )
    return checkpoint, found


def fetch_cosigned(url: str, origin: str, *, timeout: float = 10.0) -> str:
    """The newest checkpoint a witness cosigned for the log ``origin``, read from its
    monitoring endpoint: ``url`` itself when it ends in ``/checkpoint``, else
    ``<url>/<sha256(origin) hex>/checkpoint`` (as our witness and aics-witness serve it).
    ``UsageError`` when it cannot be read (the message says why), so a kept checkpoint that
    was asked for never silently goes missing."""
    try:
        import httpx
    except ImportError:
        raise UsageError(
            "reading a witness's checkpoint needs httpx: pip install 'reasoning-trace[witness]'"
        ) from None

    from .tlog_witness import origin_hash

    base = check_url(url)
    full = base if base.endswith("/checkpoint") else f"{base}/{origin_hash(origin)}/checkpoint"
    try:
        answer = httpx.get(full, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise UsageError(f"cannot read the witness's checkpoint at {full}: {exc}") from exc
    if answer.status_code == 404:
        raise UsageError(f"the witness at {base} has cosigned nothing of {origin!r} ({full})")
    if answer.status_code != 200:
        raise UsageError(f"the witness at {full} answered {answer.status_code}")
    try:
        return answer.content.decode()
    except UnicodeDecodeError:
        raise UsageError(f"the witness at {full} answered with no text") from None


def newest_witnessed(
    root: Path, log_keys: Sequence[Verifier], witnesses: Sequence[CosignerKey], quorum: int
) -> str | None:
    """The newest checkpoint of the log at ``root`` that ``quorum`` of ``witnesses`` cosigned,
    as its note with every cosignature kept for it (``cosigned``), or ``None``; checked
    with ``check_quorum`` (the log's keys ``log_keys``)."""
    from .checkpoint import Checkpoints
    from .cosigned import Cosigned

    check_policy(witnesses, quorum)
    kept = Cosigned(root)
    for entry in reversed(list(Checkpoints(root).entries())):
        note = kept.cosigned_note(entry.note, entry.size, entry.root)
        try:
            check_quorum(note, log_keys, witnesses, quorum)
        except (QuorumError, SignatureError, NoteError):
            continue
        return note
    return None
