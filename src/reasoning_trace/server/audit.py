"""The server's own audit of its log, and ``GET /v1/verify``, which shows the last result.

``verify_watch.Watch`` does the work (library first): an incremental check every ``every``
seconds and a full pass every ``full_every`` seconds, run by one process of all those serving
the log (``rtrace serve --workers N``), its result shared with the others. The route adds
nothing but the answer: the last check's result (``status`` ``ok``/``failed``, ``not yet
run`` while the first runs, ``empty`` while the log it serves holds nothing yet), what it
covered (``mode``, ``checked_from``, ``signed_size``, ``checkpoint``: the newest checkpoint
whose signature verified, for the dashboard's own proof check), when it ran (``ran_at``) and
when the last full pass ran (``full``), what is being checked now (``checking``), its
findings (kind, file, line, seq range), and which process verifies (``verifier``) and
answered (``served_by``, ``checks_here``).

``/metrics`` reads ``Watch.ok`` for its ``rtrace_verify_ok`` gauge.
Tests: ``tests/test_server.py``, ``tests/test_verify_watch.py``, ``tests/test_dashboard_trust.py``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ..verify_watch import Watch
from .problems import PROBLEMS
from .state import served

__all__ = ["router"]

router = APIRouter()


@router.get("/v1/verify", operation_id="last_verify", responses=PROBLEMS)
def last_verify(request: Request) -> dict[str, Any]:
    """The last verification's result, what it covered, when it and the last full pass ran."""
    return served(request, Watch).status()
