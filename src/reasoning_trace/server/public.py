"""The routes every client may call without a token: the operator dashboard and ``/healthz``.

    GET /                  the dashboard page (it reads the JSON API of the same server)
    GET /static/{name}     its script, its style sheet, and the chart library (from plotly)
    GET /healthz           liveness: ``{"ok": true, "records": N}``

The static files are three named files from two packages, each cached for an hour; the page
itself is not cached, so a new version is seen at once. Starlette's ``StaticFiles`` serves one
directory, every file in it (the page too, under ``/static/``); the chart library is package
data of plotly, elsewhere.
Tests: ``tests/test_dashboard.py``, ``tests/test_server.py``.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response

from .problems import PROBLEMS
from .state import ServedLog

__all__ = ["router"]

_PACKAGE = "reasoning_trace"  # the dashboard's files are package data of the library
_STATIC = {"app.js": "text/javascript", "style.css": "text/css"}

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def dashboard() -> str:
    """The dashboard page."""
    return (files(_PACKAGE) / "dashboard" / "index.html").read_text()


@router.get("/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    """One of the dashboard's static files (404 for any other name)."""
    if name == "plotly.min.js":  # the chart library, from the installed plotly package
        data = (files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    elif name in _STATIC:
        data = (files(_PACKAGE) / "dashboard" / name).read_bytes()
    else:
        raise HTTPException(404, f"no static file {name!r}")
    return Response(
        data,
        media_type=_STATIC.get(name, "text/javascript"),
        headers={"Cache-Control": "max-age=3600"},
    )


@router.get("/healthz", operation_id="healthz", responses=PROBLEMS)
def healthz(log: ServedLog) -> dict[str, Any]:
    """Liveness, and how many records the log holds."""
    return {"ok": True, "records": len(log)}
