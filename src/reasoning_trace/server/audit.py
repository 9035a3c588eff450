"""The server's own audit of its log: ``verify`` run in the background every ``every``
seconds, and ``GET /v1/verify``, which shows the last result and when it ran.

``/metrics`` reads ``BackgroundAudit.ok`` for its ``rtrace_verify_ok`` gauge.
Tests: ``tests/test_server.py``, ``tests/test_dashboard.py``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import APIRouter, Request

from ..log import DecisionLog
from .problems import PROBLEMS
from .state import served

__all__ = ["BackgroundAudit", "router"]


class BackgroundAudit:
    """Runs ``verify`` in a thread every ``every`` seconds (0: never); keeps the last result."""

    def __init__(self, log: DecisionLog, every: float) -> None:
        self.log, self.every = log, every
        self.result: dict[str, Any] = {"status": "not yet run"}
        self.ok: bool | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtrace-verify", daemon=True)

    def start(self) -> None:
        """Start auditing, unless ``every`` is 0."""
        if self.every > 0:
            self._thread.start()

    def stop(self) -> None:
        """Stop after the audit that is running, if any."""
        self._stop.set()

    def _run(self) -> None:
        """Verify, keep the result, wait ``every`` seconds; until stopped."""
        from ..verify import verify

        while True:
            started = time.time()
            report = verify(self.log.root)
            self.ok = report.ok
            self.result = {
                "status": "ok" if report.ok else "failed",
                "ok": report.ok,
                "ran_at": started,
                "seconds": round(time.time() - started, 3),
                "records": report.records,
                "signed_size": report.signed_size,
                "checkpoints": report.checkpoints,
                "failures": len(report.failures),
                "findings": [f.to_json() for f in report.findings[:50]],
            }
            if self._stop.wait(self.every):
                return


router = APIRouter()


@router.get("/v1/verify", operation_id="last_verify", responses=PROBLEMS)
async def last_verify(request: Request) -> dict[str, Any]:
    """The last background verification's result and when it ran."""
    return served(request, BackgroundAudit).result
