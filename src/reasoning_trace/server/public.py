"""The routes every client may call without a token: the operator dashboard and ``/healthz``.

    GET /                  the dashboard page (it reads the JSON API of the same server)
    GET /static/{name}     its scripts (ES modules) and its style sheet
    GET /healthz           liveness: ``{"ok": true, "records": N}``

The dashboard is a handful of named files, package data of the library, with no chart library
or other download (its charts are HTML and CSS): ``app.js`` (the page: feed, filters,
search), ``api.js`` (calls with the read token in a header), ``stream.js`` (the live feed,
resumed exactly), ``records.js`` and ``exact.js`` (records parsed without losing digits),
``badge.js`` (the verification), ``detail.js``, ``proof.js`` and ``sha256.js`` (one decision
and its proof checked in the browser), ``charts.js``, ``style.css`` and ``favicon.svg``.
Each is cached for an hour; the page itself is not cached, so a new version is seen at once.
The page is served with a Content-Security-Policy that allows only this server's own
scripts, styles and requests (no inline script, no other origin) and no framing, and with
``Referrer-Policy: no-referrer``.
Starlette's ``StaticFiles`` would serve every file of a directory (the page too, under
``/static/``); these are the only names served.
Tests: ``tests/test_dashboard.py``, ``tests/test_server.py``.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response

from .problems import PROBLEMS
from .state import ServedLog

__all__ = ["PAGE_HEADERS", "router"]

_PACKAGE = "reasoning_trace"  # the dashboard's files are package data of the library
_SCRIPTS = (
    "api.js",
    "app.js",
    "badge.js",
    "charts.js",
    "detail.js",
    "exact.js",
    "proof.js",
    "records.js",
    "sha256.js",
    "stream.js",
)
_STATIC = {
    **dict.fromkeys(_SCRIPTS, "text/javascript"),
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
#: What the dashboard page may load and do: its own files and API, nothing inline, no frames.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def dashboard() -> HTMLResponse:
    """The dashboard page."""
    page = (files(_PACKAGE) / "dashboard" / "index.html").read_text()
    return HTMLResponse(page, headers=PAGE_HEADERS)


@router.get("/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    """One of the dashboard's static files (404 for any other name)."""
    if name not in _STATIC:
        raise HTTPException(404, f"no static file {name!r}")
    return Response(
        (files(_PACKAGE) / "dashboard" / name).read_bytes(),
        media_type=_STATIC[name],
        headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/healthz", operation_id="healthz", responses=PROBLEMS)
def healthz(log: ServedLog) -> dict[str, Any]:
    """Liveness, and how many records the log holds."""
    return {"ok": True, "records": len(log)}
