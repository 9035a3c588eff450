"""I-JSON (RFC 7493): JSON that every reader reads alike, for decisions given as JSON.

A decision arrives as JSON over HTTP (``POST /v1/decisions``) and on the command line
(``rtrace record --json`` / ``--jsonl``); both read it here, so both refuse the same input:
text that is not UTF-8, a key repeated in one object (readers keep the first or the last), and
a number beyond 2**53-1 in magnitude (JavaScript rounds such integers; 1e400 is Infinity to
some). Tests: ``tests/test_hostile_http.py``, ``tests/test_cli_record.py``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import RecordError

__all__ = ["MAX_EXACT_INT", "NotIJson", "read_ijson"]

#: The largest integer every JSON reader keeps exactly (I-JSON, RFC 7493): 2**53-1.
MAX_EXACT_INT = (1 << 53) - 1


class NotIJson(RecordError):
    """JSON that readers would read differently (``path`` names where): a ``RecordError``, so
    bad input everywhere (422 over HTTP, exit 2 on the command line)."""


class _Pairs(dict[str, Any]):
    """A decoded JSON object that remembers a key it saw twice."""

    repeated: str | None = None


def _pairs(items: list[tuple[str, Any]]) -> _Pairs:
    """A JSON object's pairs as a dict that names a repeated key (json's object hook)."""
    obj = _Pairs(items)
    if len(obj) != len(items):
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                obj.repeated = key
                break
            seen.add(key)
    return obj


class _LongInt(str):
    """The digits of an integer too long to convert (kept so the walk can name its path)."""


def _int(text: str) -> int | str:
    """A JSON integer, or its digits when too long to convert in bounded time."""
    return int(text) if len(text) <= 20 else _LongInt(text)


def _float(text: str) -> float | str:
    """A JSON decimal, or its text when it is too large for a float (``1e400``), so the
    refusal names the number as written rather than ``inf``."""
    value = float(text)
    return value if math.isfinite(value) else _LongInt(text)


def read_ijson(body: bytes) -> Any:
    """Decode a request body as I-JSON (RFC 7493), refusing what readers disagree on.

    UTF-8 only; no repeated key in an object; no number beyond 2**53-1 in magnitude.
    Raises ``ValueError`` for a body that is not JSON (or nests too deeply to read) and
    ``NotIJson``, naming the path, for one that is JSON but not I-JSON. NaN is left to the
    record's own check, which names the field.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_int=_int, parse_float=_float)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:  # a walk without recursion: the body may nest as deep as json could read
        path, item = stack.pop()
        if isinstance(item, _Pairs):
            if item.repeated is not None:
                key = f"{path}.{item.repeated}" if path else item.repeated
                raise NotIJson(key, f"key {item.repeated!r} appears twice in one object")
            stack.extend((f"{path}.{k}" if path else k, v) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(item))
        elif isinstance(item, _LongInt) or (
            isinstance(item, int | float)
            and not isinstance(item, bool)
            and item == item  # NaN is left to the record's check, which names it
            and abs(item) > MAX_EXACT_INT
        ):
            raise NotIJson(
                path, f"number {str(item)[:24]} is beyond 2**53-1: some JSON readers round it"
            )
    return value
