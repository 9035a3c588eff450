"""One verifier for all the processes serving a log: in one process (two watches on one
root) and with a real ``rtrace serve --workers 2``, whose answers prove that one worker
verifies and the other only reads its result."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx

from reasoning_trace import DecisionLog
from reasoning_trace.layout import watch_dir
from reasoning_trace.verify_watch import Watch

from .browser import serving, wait_for
from .conftest import snapshot
from .test_server import DECISION, READ, WRITE, auth, free_port


def test_two_watches_on_one_log_verify_once(root: Path) -> None:
    """Of two watches on one log, one verifies and the other serves its result; when the
    first stops, the second takes over and verifies from a full pass."""
    with DecisionLog(str(root), sync="never") as log:
        for i in range(20):
            log.record("gate", True, {}, {"i": i})
    first = Watch(root, every=0.05)
    second = Watch(root, every=0.05)
    first.start()
    wait_for("the first watch leads", lambda: first.leading)
    second.start()
    wait_for("a result", lambda: first.status().get("status") == "ok")
    wait_for("the follower reads it", lambda: second.status().get("status") == "ok")
    assert not second.leading and second.checks_here == 0
    checks = wait_for("more checks", lambda: first.status()["verifier"]["checks"] >= 3)
    assert second.status()["verifier"]["full_passes"] == 1 and checks
    folder = watch_dir(root)
    assert folder is not None and (folder / "watch.lock").exists()
    first.stop()
    wait_for("the second takes over", lambda: second.leading)
    wait_for("it verified", lambda: second.checks_here > 0 and second.ok is True)
    assert second.status()["verifier"]["full_passes"] == 1
    second.stop()


def test_a_watch_that_cannot_read_the_log_says_so(tmp_path: Path) -> None:
    """A log folder that is gone is a failure in the watch's status (cannot_verify), not a
    stuck "checking" badge and not a dead thread."""
    watch = Watch(tmp_path / "nowhere", every=0.05)
    watch.start()
    status = wait_for(
        "a result", lambda: watch.status().get("status") == "failed" and watch.status()
    )
    assert status["findings"][0]["kind"] == "cannot_verify"
    assert watch.ok is False
    watch.stop()


def test_two_server_workers_run_one_verification(root: Path, tmp_path: Path) -> None:
    """rtrace serve --workers 2: answers from both workers (served_by) name the same
    verifying process; that worker counts its checks, the other none; the lock and the
    shared state live in the per-user cache, not under the log root."""
    port = free_port()
    tokens = tmp_path / "tokens"
    tokens.write_text(f"write:{WRITE}\nread:{READ}\n")
    env = dict(
        os.environ,
        REASONING_TRACE_VERIFY_SECONDS="0.2",
        REASONING_TRACE_FULL_VERIFY_SECONDS="3600",
    )
    server = subprocess.Popen(
        [
            shutil.which("rtrace") or "rtrace",
            "--dir",
            str(root),
            "serve",
            "--port",
            str(port),
            "--workers",
            "2",
            "--tokens",
            str(tokens),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"

    def answer() -> dict[str, Any] | None:
        try:  # a new connection each time, so that either worker may answer
            got = httpx.get(f"{url}/v1/verify", headers=auth(READ), timeout=5)
        except httpx.TransportError:
            return None
        return got.json() if got.status_code == 200 else None

    try:
        wait_for("the server", answer)
        with httpx.Client(headers=auth(WRITE), timeout=10) as client:
            for _ in range(10):
                assert client.post(f"{url}/v1/decisions", json=DECISION).status_code == 201
        by_worker: dict[int, dict[str, Any]] = {}

        def both() -> bool:
            got = answer()
            if got and got.get("status") == "ok" and got["records"] == 10:
                by_worker[got["served_by"]] = got
            return len(by_worker) == 2

        wait_for("answers from both workers", both, seconds=60)
        verifiers = {a["verifier"]["pid"] for a in by_worker.values()}
        assert len(verifiers) == 1, by_worker
        (leader,) = verifiers
        assert leader in by_worker
        assert by_worker[leader]["checks_here"] > 0
        (other,) = set(by_worker) - {leader}
        assert by_worker[other]["checks_here"] == 0
        assert by_worker[leader]["verifier"]["full_passes"] >= 1
        folder = watch_dir(root)
        assert folder is not None and (folder / "watch.lock").exists()
        assert not any("watch" in p.name for p in root.rglob("*"))
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_read_only_log_is_served_and_verified(root: Path) -> None:
    """A log whose files and folders are read-only is served and verified: the verifier's
    lock and result live in the per-user cache, and nothing under the root but derived
    files changes."""
    with DecisionLog(str(root), sync="never") as log:
        for i in range(12):
            log.record("gate", True, {}, {"i": i})
        log.checkpoint()
    paths = [root, *root.rglob("*")]
    for path in paths:
        path.chmod(0o555 if path.is_dir() else 0o444)
    before = snapshot(root)
    try:
        log = DecisionLog(str(root))
        with serving(log, verify_every=0.2) as url:
            verified = wait_for(
                "a verification",
                lambda: (v := httpx.get(f"{url}/v1/verify").json()).get("status") == "ok" and v,
            )
            assert verified["signed_size"] == 12 and verified["checkpoint"]["size"] == 12
            got = httpx.get(f"{url}/v1/decisions/3?proof=true&size=12").json()
            assert got["proof"]["tree_size"] == 12 and got["line"].startswith('{"action"')
        log.close()
        assert snapshot(root) == before
        assert not any("watch" in p.name for p in root.rglob("*"))
    finally:
        for path in paths:
            path.chmod(0o755 if path.is_dir() else 0o644)
