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

from typing import Any

from fastapi import Request

from ..ijson import NotIJson, read_ijson
from .problems import CLOSE, Problem

__all__ = ["read_json_body"]


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
        raise Problem(422, str(exc), path=exc.path) from None
    except ValueError as exc:
        raise Problem(400, f"body is not JSON: {exc}") from None
