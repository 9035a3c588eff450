"""A log its server has not written to yet is ``empty``, never ``not_a_log``: through
``create_app`` on a fresh log root (``serve --demo`` before its first record), and in a
``Watch`` that then sees the first records, or a folder emptied after it held a log."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from reasoning_trace import DecisionLog
from reasoning_trace.server import create_app
from reasoning_trace.verify_watch import Watch

from .browser import wait_for
from .test_server import free_port


def test_a_fresh_log_served_is_empty_not_a_failure(root: Path) -> None:
    """``create_app`` on a fresh, empty log root: every ``/v1/verify`` answer until the first
    record is pending or ``empty`` (never ``not_a_log``), then the first record verifies."""
    log = DecisionLog(str(root), sync="never")
    app = create_app(log, verify_every=0.05)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    seen: list[dict[str, Any]] = []

    def answer() -> dict[str, Any]:
        """One ``/v1/verify`` answer, kept."""
        seen.append(httpx.get(f"http://127.0.0.1:{port}/v1/verify").json())
        return seen[-1]

    try:
        wait_for("the server", lambda: srv.started)
        empty = wait_for("an empty result", lambda: answer()["status"] == "empty" and seen[-1])
        assert empty["records"] == 0 and empty["findings"] == [] and "ok" not in empty
        checks = empty["verifier"]["checks"]
        wait_for("more checks", lambda: answer()["verifier"]["checks"] >= checks + 3)
        log.record("gate", True, {}, {"i": 0})
        log.checkpoint()
        wait_for("the record verified", lambda: answer().get("records") == 1)
        assert seen[-1]["status"] == "ok"
        statuses = [a["status"] for a in seen]
        assert set(statuses) <= {"not yet run", "empty", "ok"}, statuses
        assert all(f["kind"] != "not_a_log" for a in seen for f in a.get("findings", []))
    finally:
        srv.should_exit = True
        thread.join(10)
        log.close()


def test_a_folder_emptied_after_it_held_a_log_fails(root: Path) -> None:
    """A writing ``Watch`` that saw the folder hold a log does not call it empty when it is
    emptied: that is ``not_a_log``, as ``verify`` says; a watch not writing never says empty."""
    with DecisionLog(str(root), sync="never") as log:
        log.record("gate", True, {}, {"i": 0})
        log.checkpoint()
    watch = Watch(root, every=0.05, writing=True)
    watch.start()
    try:
        wait_for("a result", lambda: watch.ok is True)
        for child in root.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        status = wait_for("the failure", lambda: watch.ok is False and watch.status())
        assert [f["kind"] for f in status["findings"]] == ["not_a_log"]
    finally:
        watch.stop()
    empty = root.parent / "other"
    empty.mkdir()
    reader = Watch(empty, every=0.05)
    reader.start()
    try:
        status = wait_for("a result", lambda: reader.ok is False and reader.status())
        assert [f["kind"] for f in status["findings"]] == ["not_a_log"]
    finally:
        reader.stop()
