"""Decision records: the one-line JSON format of SPEC section 1.

A record is one JSON object on one line, keys sorted, compact separators, UTF-8. The stored
bytes are final: they are what the Merkle tree hashes, so nothing here ever re-serialises a
stored record to check it.

Writing happens in two steps so that nothing can fail while the writer lock is held:
``prepare`` validates, redacts, encodes and size-checks everything a caller gave (and names the
offending field path when it refuses); ``Pending.compose`` then only splices in the ``seq`` and
the instant, which the store assigns under its lock. ``parse_record`` reads a line back: it
requires the fields and their JSON types (and keeps unknown fields), but not the rules about
values that ``prepare`` enforces on the way in (lengths, control characters, the id's
characters, the shape of a vote): readers accept what any writer of the format wrote (SPEC 1).
Redaction rules are applied by ``redact``.

Longer than 400 lines because the format is one concept read in one place: the line
``prepare`` composes and the fields ``parse_record`` requires of it are a screen apart, and a
reader comparing the two should not have to open two files.
Tests: ``tests/test_record.py`` (round-trips, refusals, hypothesis properties).
"""

from __future__ import annotations

import calendar
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson

from .errors import CorruptLine, RecordError, RecordTooLarge
from .redact import Redactor, apply_redaction

__all__ = [
    "CONTROL_CHARS",
    "FORMAT_VERSION",
    "ID_CHARS",
    "MAX_LINE_BYTES",
    "MAX_NAME",
    "Decision",
    "Pending",
    "format_record",
    "format_utc",
    "parse_record",
    "parse_utc",
    "prepare",
    "uuid7",
]

FORMAT_VERSION = 1
MAX_LINE_BYTES = 1 << 20
_MAX_DEPTH = 254  # orjson refuses to encode deeper nesting
#: The longest ``action``, ``node`` and ``id`` (characters).
MAX_NAME = 128
#: The characters of a caller-given ``id`` (a regular-expression class).
ID_CHARS = "A-Za-z0-9._:-"
#: The control characters no ``action``, ``node`` or vote ``reason`` may hold (a class).
CONTROL_CHARS = r"\x00-\x1f\x7f-\x9f"
_ID_RE = re.compile(f"[{ID_CHARS}]{{1,{MAX_NAME}}}\\Z")
_CONTROL_RE = re.compile(f"[{CONTROL_CHARS}]")
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1
_SORT = orjson.OPT_SORT_KEYS
# Widest possible seq / timestamp / datetime text, so the size check can run before the lock.
_VARIABLE_WIDTH = 20 + 24 + 27

_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})


class Decision(NamedTuple):
    """One recorded decision, as stored (SPEC section 1). Immutable.

    ``extra`` keeps fields this version does not know; ``line`` is the exact stored bytes
    (without the newline), the leaf input of the integrity tree. A ``NamedTuple`` rather than a
    frozen dataclass because reading a log builds millions of these: one C-level tuple
    allocation instead of an ``object.__setattr__`` call per field (``bench/bench_read.py``).
    """

    seq: int
    id: str
    timestamp: float
    datetime_utc: str
    action: str
    approved: bool
    votes: dict[str, Any]
    subject: dict[str, Any]
    reason: str = ""
    node: str | None = None
    redacted: tuple[str, ...] = ()
    v: int = FORMAT_VERSION
    extra: Mapping[str, Any] = _NO_EXTRA
    line: bytes = b""

    @property
    def day(self) -> str:
        """The UTC day (``YYYY-MM-DD``) whose file holds this record."""
        return self.datetime_utc[:10]

    @property
    def against(self) -> list[str]:
        """The voters who voted against (their vote's ``passed`` is ``false``), in vote order."""
        return [
            voter
            for voter, vote in self.votes.items()
            if isinstance(vote, dict) and vote.get("passed") is False
        ]

    def to_dict(self) -> dict[str, Any]:
        """The record as the JSON object stored on its line."""
        out: dict[str, Any] = dict(self.extra)
        out.update(
            v=self.v,
            seq=self.seq,
            id=self.id,
            timestamp=self.timestamp,
            datetime_utc=self.datetime_utc,
            action=self.action,
            approved=self.approved,
            votes=self.votes,
            subject=self.subject,
            reason=self.reason,
        )
        if self.node is not None:
            out["node"] = self.node
        if self.redacted:
            out["redacted"] = list(self.redacted)
        return out

    def content_key(self) -> bytes:
        """What makes two recordings of one caller-given id "the same decision"."""
        return _content_key(
            self.action, self.approved, self.votes, self.subject, self.reason, self.node
        )


def _content_key(
    action: str,
    approved: bool,
    votes: Any,
    subject: Any,
    reason: str,
    node: str | None,
) -> bytes:
    return orjson.dumps([action, approved, votes, subject, reason, node], option=_SORT)


class _Random:
    """Bytes from ``os.urandom``, read 4 KiB at a time (one ``getrandom`` per 409 ids, not one
    per id). Thread-safe; a forked child drops what its parent read, so no two processes
    hand out the same bytes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf = b""
        self._pos = 0
        os.register_at_fork(after_in_child=self._drop)

    def _drop(self) -> None:
        self._lock = threading.Lock()  # a lock held by another thread at fork stays held
        self._buf, self._pos = b"", 0

    def take(self, n: int) -> bytes:
        """``n`` (at most 4096) fresh random bytes."""
        with self._lock:
            pos = self._pos
            if pos + n > len(self._buf):
                self._buf, pos = os.urandom(4096), 0
            self._pos = pos + n
            return self._buf[pos : pos + n]


_random = _Random()


def uuid7(unix_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562 section 5.7): 48-bit Unix milliseconds, version 7, 74 random bits
    (from ``os.urandom``, read in blocks)."""
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    rand = int.from_bytes(_random.take(10), "big")
    value = (ms & 0xFFFFFFFFFFFF) << 80 | 0x7 << 76 | (rand >> 64 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & 0x3FFFFFFFFFFFFFFF
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def format_utc(micros: int) -> str:
    """ISO 8601 UTC with microseconds and ``Z`` for an instant in Unix microseconds."""
    sec, frac = divmod(micros, 1_000_000)
    t = time.gmtime(sec)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
        f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{frac:06d}Z"
    )


#: The latest instant a record can carry: 9999-12-31T23:59:59.999999Z (four-digit years only).
MAX_MICROS = 253_402_300_799_999_999


def parse_utc(text: str) -> int:
    """The instant, in Unix microseconds, of a ``datetime_utc`` written by ``format_utc``.

    Raises ``ValueError`` for any other text.
    """
    if len(text) != 27 or text[4] != "-" or text[10] != "T" or text[19] != "." or text[26] != "Z":
        raise ValueError(f"not a record instant: {text!r}")
    digits = text[:4] + text[5:7] + text[8:10] + text[11:13] + text[14:16] + text[17:19]
    if not (digits.isascii() and digits.isdigit() and text[20:26].isdigit()):
        raise ValueError(f"not a record instant: {text!r}")
    seconds = calendar.timegm(
        (
            int(text[:4]),
            int(text[5:7]),
            int(text[8:10]),
            int(text[11:13]),
            int(text[14:16]),
            int(text[17:19]),
            0,
            0,
            0,
        )
    )
    return seconds * 1_000_000 + int(text[20:26])


def _type_name(value: Any) -> str:
    return type(value).__name__


def _check_json(value: Any, path: str, depth: int = 0) -> None:
    """Refuse anything that would not read back exactly equal, naming its path."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise RecordError(path, "string contains a lone surrogate (not UTF-8)") from exc
        return
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise RecordError(path, "integer outside the 64-bit range JSON readers keep exactly")
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise RecordError(path, f"{value!r} is not JSON (NaN and Infinity are refused)")
        return
    if depth >= _MAX_DEPTH:
        raise RecordError(path, f"nested deeper than {_MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise RecordError(
                    f"{path}[{key!r}]", f"{_type_name(key)} key is not JSON (keys must be str)"
                )
            _check_json(item, f"{path}.{key}" if path else key, depth + 1)
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]", depth + 1)
        return
    hint = " (use a list)" if isinstance(value, tuple) else ""
    raise RecordError(path, f"{_type_name(value)} is not JSON{hint}")


def _exact(value: Any, path: str) -> bytes:
    """Encode ``value``, proving it reads back equal; else name the offending path.

    The round trip catches what orjson would change silently (NaN and Infinity become null,
    tuples become lists, datetimes and dataclasses become strings and objects) at C speed; the
    slower walk runs only to say where the problem is.
    """
    try:
        encoded = orjson.dumps(value, option=_SORT)
        if orjson.loads(encoded) == value:
            return encoded
    except (TypeError, orjson.JSONEncodeError):
        pass  # the walk below names the path
    _check_json(value, path)
    raise RecordError(path, "value does not read back equal after JSON encoding")


def _check_text(name: str, value: Any, *, max_len: int | None = None, control: bool = True) -> None:
    if not isinstance(value, str):
        raise RecordError(name, f"must be a str, not {_type_name(value)}")
    if max_len is not None and not 1 <= len(value) <= max_len:
        raise RecordError(name, f"must be 1 to {max_len} characters, got {len(value)}")
    if control and _CONTROL_RE.search(value):
        raise RecordError(name, "must not contain control characters")
    _check_json(value, name)


def _votes_well_formed(votes: dict[str, Any]) -> None:
    for voter, vote in votes.items():
        where = f"votes.{voter}"
        if not isinstance(vote, dict):
            raise RecordError(where, f"a vote must be an object, not {_type_name(vote)}")
        if "passed" in vote and not isinstance(vote["passed"], bool):
            raise RecordError(f"{where}.passed", "must be a bool")
        if "reason" in vote and not isinstance(vote["reason"], str):
            raise RecordError(f"{where}.reason", "must be a str")


# --- writing ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Pending:
    """A validated, encoded decision waiting for its ``seq`` and instant.

    The line is ``head + datetime + mid + seq + tail_a + timestamp + tail_b``: key order is
    sorted, so the three store-assigned values fall between fixed, pre-encoded pieces.
    """

    head: bytes
    mid: bytes
    tail_a: bytes
    tail_b: bytes
    id: str
    caller_id: bool
    fields: dict[str, Any]

    @property
    def content(self) -> bytes:
        """What a stored decision with the same caller id must match (see ``content_key``)."""
        f = self.fields
        return _content_key(
            f["action"], f["approved"], f["votes"], f["subject"], f["reason"], f["node"]
        )

    def compose(self, seq: int, micros: int, when: str) -> bytes:
        """The full line (without newline) for ``seq`` at ``micros`` (``when`` in ISO form)."""
        return b"".join(
            (
                self.head,
                when.encode(),
                self.mid,
                str(seq).encode(),
                self.tail_a,
                repr(micros / 1_000_000).encode(),
                self.tail_b,
            )
        )

    def decision(self, seq: int, micros: int, when: str, line: bytes) -> Decision:
        """The ``Decision`` this pending record became once stored."""
        f = self.fields
        return Decision(
            seq=seq,
            id=self.id,
            timestamp=micros / 1_000_000,
            datetime_utc=when,
            action=f["action"],
            approved=f["approved"],
            votes=f["votes"],
            subject=f["subject"],
            reason=f["reason"],
            node=f.get("node"),
            redacted=tuple(f.get("redacted", ())),
            line=line,
        )


def prepare(
    action: Any,
    approved: Any,
    votes: Any,
    subject: Any,
    reason: Any = "",
    *,
    id: str | None = None,
    node: str | None = None,
    redact: Sequence[Redactor] = (),
    max_line_bytes: int = MAX_LINE_BYTES,
    legacy_source: Mapping[str, Any] | None = None,
) -> Pending:
    """Validate, redact and encode a decision; raise ``RecordError`` naming the field path.

    Runs before the writer lock is taken, so a refusal leaves the log untouched.
    """
    _check_text("action", action, max_len=MAX_NAME)
    if not isinstance(approved, bool):
        raise RecordError("approved", f"must be a bool, not {_type_name(approved)}")
    if not isinstance(votes, dict):
        raise RecordError("votes", f"must be an object (dict), not {_type_name(votes)}")
    if not isinstance(subject, dict):
        raise RecordError("subject", f"must be an object (dict), not {_type_name(subject)}")
    _check_text("reason", reason, control=False)
    enc_votes = _exact(votes, "votes")
    enc_subject = _exact(subject, "subject")
    _votes_well_formed(votes)
    if node is not None:
        _check_text("node", node, max_len=MAX_NAME)
    caller_id = id is not None
    if id is None:
        id = uuid7()
    elif not isinstance(id, str) or not _ID_RE.match(id):
        raise RecordError("id", "must be 1-128 characters of A-Za-z0-9._:-")
    elif id.isdigit():  # get("17"), /v1/decisions/17 and `rtrace show 17` read digits as a seq
        raise RecordError("id", f"{id[:24]!r} is all digits and would read as a seq: add a letter")

    fields: dict[str, Any] = {"votes": votes, "subject": subject, "reason": reason}
    redacted = apply_redaction(fields, redact) if redact else []
    if redacted:
        # A rule may have put anything in place; the result must still be exact JSON.
        enc_votes = _exact(fields["votes"], "votes")
        enc_subject = _exact(fields["subject"], "subject")
        _check_text("reason", fields["reason"], control=False)
    fields.update(action=action, approved=approved, node=node)
    if redacted:
        fields["redacted"] = redacted

    def enc(value: Any) -> bytes:
        return orjson.dumps(value, option=_SORT)

    head = b'{"action":' + enc(action) + b',"approved":' + enc(approved) + b',"datetime_utc":"'
    mid = b'","id":' + enc(id)
    if legacy_source is not None:  # a record taken in from the original module's bytes
        mid += b',"legacy_source":' + _exact(dict(legacy_source), "legacy_source")
    if node is not None:
        mid += b',"node":' + enc(node)
    mid += b',"reason":' + enc(fields["reason"])
    if redacted:
        mid += b',"redacted":' + enc(redacted)
    mid += b',"seq":'
    tail_a = b',"subject":' + enc_subject + b',"timestamp":'
    tail_b = b',"v":' + enc(FORMAT_VERSION) + b',"votes":' + enc_votes + b"}"
    size = len(head) + len(mid) + len(tail_a) + len(tail_b) + _VARIABLE_WIDTH
    if size > max_line_bytes:
        path, field_size = _largest_field(fields)
        raise RecordTooLarge(
            path,
            f"record would be about {size} bytes, over the limit of {max_line_bytes}; "
            f"the largest field is {path} ({field_size} bytes)",
        )
    return Pending(head, mid, tail_a, tail_b, id, caller_id, fields)


def _largest_field(fields: dict[str, Any]) -> tuple[str, int]:
    """The path and encoded size of what makes a record too large.

    From the largest top-level field, go down into the largest member for as long as it is at
    least half of its parent: ``subject.blob`` for one huge value, ``subject`` for many small
    ones. Only runs for a refused record (each level is encoded again).
    """

    def size(value: Any) -> int:
        return len(orjson.dumps(value))

    path, value = max(
        ((name, fields[name]) for name in ("votes", "subject", "reason", "action", "node")),
        key=lambda item: size(item[1]),
    )
    total = size(value)
    while isinstance(value, dict | list) and value:
        items = (
            [(f"{path}.{k}", v) for k, v in value.items()]
            if isinstance(value, dict)
            else [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        )
        child_path, child = max(items, key=lambda item: size(item[1]))
        child_size = size(child)
        if child_size * 2 < total:
            break
        path, value, total = child_path, child, child_size
    return path, total


def format_record(decision: Decision) -> bytes:
    """The canonical line for a decision: sorted keys, compact, UTF-8, no newline."""
    return orjson.dumps(decision.to_dict(), option=_SORT)


# --- reading ---------------------------------------------------------------------------------

_REQUIRED: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("v", int),
    ("seq", int),
    ("id", str),
    ("timestamp", (float, int)),
    ("datetime_utc", str),
    ("action", str),
    ("approved", bool),
    ("votes", dict),
    ("subject", dict),
    ("reason", str),
)
_KNOWN = frozenset(name for name, _ in _REQUIRED) | {"node", "redacted"}
_new_decision = tuple.__new__


def _explain(obj: Any) -> str:
    """Why ``obj`` is not a record (the slow path, only for the error message)."""
    if not isinstance(obj, dict):
        return f"a record must be a JSON object, not {_type_name(obj)}"
    for name, kind in _REQUIRED:
        if name not in obj:
            return f"missing field {name!r}"
        value = obj[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"field {name!r} has the wrong type ({_type_name(value)})"
    if obj["seq"] < 0:
        return "field 'seq' is negative"
    node = obj.get("node")
    if node is not None and not isinstance(node, str):
        return "field 'node' has the wrong type"
    return "field 'redacted' must be a list of str"


def decision_from_dict(obj: Any, line: bytes = b"") -> Decision:
    """Build a ``Decision`` from a parsed record object; raise ``ValueError`` if malformed.

    The hot path of every read: one flat type check, one tuple allocation.
    """
    try:
        seq, id_, ts, when = obj["seq"], obj["id"], obj["timestamp"], obj["datetime_utc"]
        action, approved, votes = obj["action"], obj["approved"], obj["votes"]
        subject, reason, v = obj["subject"], obj["reason"], obj["v"]
    except (KeyError, TypeError):
        raise ValueError(_explain(obj)) from None
    if not (
        type(seq) is int
        and seq >= 0
        and type(id_) is str
        and (type(ts) is float or type(ts) is int)
        and type(when) is str
        and type(action) is str
        and type(approved) is bool
        and type(votes) is dict
        and type(subject) is dict
        and type(reason) is str
        and type(v) is int
    ):
        raise ValueError(_explain(obj))
    node = None
    redacted: tuple[str, ...] = ()
    extra = _NO_EXTRA
    if len(obj) > 10:
        node = obj.get("node")
        raw = obj.get("redacted", ())
        if (node is not None and type(node) is not str) or not (
            isinstance(raw, list | tuple) and all(type(p) is str for p in raw)
        ):
            raise ValueError(_explain(obj))
        redacted = tuple(raw)
        unknown = obj.keys() - _KNOWN
        if unknown:
            extra = {k: obj[k] for k in unknown}
    return _new_decision(
        Decision,
        (
            seq,
            id_,
            float(ts),
            when,
            action,
            approved,
            votes,
            subject,
            reason,
            node,
            redacted,
            v,
            extra,
            line,
        ),
    )


def parse_record(
    line: bytes, *, file: str = "<line>", offset: int = 0, lineno: int | None = None
) -> Decision:
    """Parse one stored line (without newline) strictly; raise ``CorruptLine`` with its place."""
    try:
        obj = orjson.loads(line)
        return decision_from_dict(obj, line)
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise CorruptLine(file, offset, f"not a record ({exc})", lineno) from exc
