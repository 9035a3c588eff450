"""Refusals as RFC 9457 problems: ``application/problem+json`` with ``type``, ``title``,
``status`` and a ``detail`` naming what is wrong (``path`` for a record's field).

``Problem`` is the exception a route raises to refuse; ``add_handlers`` makes every refusal
one, whether a route raised it, FastAPI refused a parameter, or Starlette found no route
(404) or no method (405, with every method the path has in ``Allow``). An unexpected error is
logged and answered 500 without a traceback. ``PROBLEMS`` documents them in OpenAPI.
Tests: ``tests/test_hostile_http.py``, ``tests/test_server.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

__all__ = [
    "CLOSE",
    "PROBLEMS",
    "PROBLEM_JSON",
    "Problem",
    "add_handlers",
    "allowed_methods",
    "problem",
]

PROBLEM_JSON = "application/problem+json"
logger = logging.getLogger("reasoning_trace")
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
#: A refused body is not read on: the connection ends.
CLOSE: Mapping[str, str] = {"Connection": "close"}


def problem(
    status: int, detail: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """An RFC 9457 problem-details response; ``extra`` members (``path``) are added."""
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


class Problem(Exception):
    """A refusal a route raises: answered as ``problem(status, detail, headers=, **extra)``."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers, self.extra = status, detail, headers, extra

    def response(self) -> JSONResponse:
        """The problem response this refusal is."""
        return problem(self.status, self.detail, headers=self.headers, **self.extra)


async def _refused(request: Request, exc: Exception) -> JSONResponse:
    """A ``Problem`` a route raised."""
    assert isinstance(exc, Problem)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """An ``HTTPException``: a route's, or Starlette's 404 and 405."""
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # every method the path has, not only its first route's
        headers["Allow"] = ", ".join(allowed_methods(request))
    return problem(exc.status_code, str(exc.detail), headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """The methods some route of the app serves at the request's path.

    Each method is tried against each route (``matches``, which included routers answer for
    their routes too), so routes of one path declared in several routers all count.
    """
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    ]


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    """A parameter FastAPI refused (422), naming up to five of its errors."""
    assert isinstance(exc, RequestValidationError)
    reasons = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()))
        reasons.append(f"{where}: {str(error.get('msg', 'invalid'))[:120]}")
    return problem(422, "; ".join(reasons) or "invalid request")


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    """Anything else: logged with its traceback, answered 500 without it."""
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal error (logged by the server)")


def add_handlers(app: FastAPI) -> None:
    """Answer every refusal and failure of ``app`` as a problem."""
    app.add_exception_handler(Problem, _refused)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _internal)


_PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "path": {"type": "string"},
    },
}
#: The ``responses`` of an operation that may refuse: any 4xx, and 422, is a problem.
PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {
        "description": "A problem (RFC 9457) naming what is wrong",
        "content": {PROBLEM_JSON: {"schema": _PROBLEM_SCHEMA}},
    }
    for code in ("4XX", 422)
}
