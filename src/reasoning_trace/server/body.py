"""Reading a request body: JSON only, up to a limit, and only JSON every reader reads alike.

``read_json_body`` refuses (as a ``Problem``) a body that is not ``application/json`` in
UTF-8 (415: a type no page can send cross-site without CORS), one over the limit (413, both
when ``Content-Length`` says so and while a chunked body is read: the rest is never read),
one that is not JSON (400), and one that is JSON but not I-JSON (RFC 7493, 422 naming the
path): a key repeated in one object (readers keep the first or the last) or a number beyond
2**53-1 in magnitude (JavaScript rounds such integers; 1e400 is Infinity to some).

The limit is counted here rather than by a route's ``max_body_size`` (Starlette's
``RequestBodyLimitMiddleware``): when ``Content-Length`` is over it, that middleware replaces
whatever the route answers with its own plain-text 413, where this API answers a problem.
Tests: ``tests/test_hostile_http.py``, ``tests/test_server.py``.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from ..request import MAX_EXACT_INT
from .problems import CLOSE, Problem

__all__ = ["NotIJson", "read_ijson", "read_json_body"]


class NotIJson(ValueError):
    """A request body that JSON readers would read differently (``path`` names where)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


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
        value = json.loads(text, object_pairs_hook=_pairs, parse_int=_int)
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


async def read_json_body(request: Request, limit: int) -> Any:
    """The request's body decoded as I-JSON, read up to ``limit`` bytes; ``Problem`` if not."""
    media, _, params = request.headers.get("content-type", "").partition(";")
    charset = params.strip().lower().removeprefix("charset=").strip('"')
    if media.strip().lower() != "application/json" or charset not in ("", "utf-8"):
        raise Problem(415, "the body must be application/json (UTF-8)", headers=CLOSE)
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise Problem(413, f"body of {declared} bytes is over the limit of {limit}", headers=CLOSE)
    chunks, size = [], 0
    async for chunk in request.stream():  # the limit holds while reading, chunked or not
        size += len(chunk)
        if size > limit:
            raise Problem(413, f"body is over the limit of {limit} bytes", headers=CLOSE)
        chunks.append(chunk)
    try:
        return read_ijson(b"".join(chunks))
    except NotIJson as exc:
        raise Problem(422, f"{exc.path}: {exc}", path=exc.path) from None
    except ValueError as exc:
        raise Problem(400, f"body is not JSON: {exc}") from None
