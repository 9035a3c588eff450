"""Witness delivery and hardening: a slow witness never holds up another, nor ``rtrace witness
push``; the checkpoint a short-lived writer signs on close reaches the witnesses; our witness
keeps a log-signed rollback as evidence and answers a malformed ``Content-Length`` with 400.

Real servers on loopback ports; waits are on conditions with deadlines.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from reasoning_trace import DecisionLog
from reasoning_trace.checkpoint import Checkpoints
from reasoning_trace.cosignature import Cosigner
from reasoning_trace.tlog_witness import format_add_checkpoint

from .test_witness import fill, new_log, rtrace
from .witnesses import Running, cosigned_newest, free_port, our_witness, slow_witness, wait_for


def _post_raw(url: str, head: bytes, body: bytes = b"") -> bytes:
    """Send a hand-made request to ``url``'s host and port; the whole answer it gives."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head + b"\r\n" + body)
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_malformed_content_length_is_400_without_a_traceback(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """``Content-Length: \\xb2`` (a digit to ``str.isdigit``, not to ``int``), ``abc`` or a
    negative one is answered 400 with a plain message; no traceback; the witness serves on."""
    with our_witness(tmp_path / "w") as w:
        for value in (b"\xb2", b"abc", b"-5", b"+5", b"1_0"):
            head = b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\nContent-Length: " + value
            answer = _post_raw(w.url, head + b"\r\n", b"old 0\n\n")
            assert answer.startswith(b"HTTP/1.1 400 "), (value, answer)
            assert b"Content-Length is not a decimal number" in answer
        missing = _post_raw(w.url, b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\n")
        assert missing.startswith(b"HTTP/1.1 411 ")
        assert httpx.get(f"{w.url}/healthz", timeout=10).status_code == 200
    assert "Traceback" not in capfd.readouterr().err


def test_a_rollback_signed_by_the_log_is_kept_as_evidence(root: Path, tmp_path: Path) -> None:
    """A checkpoint smaller than the one the witness cosigned, with a valid log signature, is
    answered 409 with the size it holds and kept in ``evidence/`` (as 422s are); a stale
    old size for a larger checkpoint (an ordinary 409) is not evidence."""
    vkey = new_log(root)
    with DecisionLog(str(root), sync="never", checkpoint_every=0) as log:
        fill(log, 5)
        note5 = log.checkpoint()
        fill(log, 7)
        note12 = log.checkpoint()
        fill(log, 3)
        note15 = log.checkpoint()
        proof = log.consistency(5, 12).proof
    origin = note5.split("\n", 1)[0]
    with our_witness(tmp_path / "w") as w:
        w.witness.add_log(vkey)

        def post(old: int, proof: list[bytes], note: str) -> httpx.Response:
            body = format_add_checkpoint(old, proof, note)
            return httpx.post(f"{w.url}/add-checkpoint", content=body, timeout=10)

        assert post(0, [], note5).status_code == 200
        assert post(5, list(proof), note12).status_code == 200
        stale = post(0, [], note15)  # not a rollback: the log lost its cursor
        assert (stale.status_code, stale.content) == (409, b"12\n")
        assert w.witness.evidence(origin) == []
        rolled = post(0, [], note5)  # the log went back to 5 records
        assert (rolled.status_code, rolled.content) == (409, b"12\n")
        kept = w.witness.evidence(origin)
        assert [e["status"] for e in kept] == [409]
        assert "fewer than cosigned (12)" in str(kept[0]["reason"])
        tampered = note5.replace("\n5\n", "\n4\n", 1)  # no valid log signature: not kept
        assert post(0, [], tampered).status_code == 403
        assert len(w.witness.evidence(origin)) == 1


def test_a_slow_witness_holds_up_neither_another_nor_push(root: Path, tmp_path: Path) -> None:
    """A witness that accepts and trickles its answer a byte every 4 s, listed first, does not
    keep the second (healthy) witness from cosigning each checkpoint as it is signed; ``rtrace
    witness push`` ends by its ``--timeout`` and prints the slow one ``unavailable`` and the
    healthy one ``cosigned``."""
    vkey = new_log(root)
    slow_key = Cosigner.generate("witness.test/slow").key
    with slow_witness() as slow_url, our_witness(tmp_path / "w", "witness.test/ok") as w:
        w.witness.add_log(vkey)
        lines = [f"{slow_key} {slow_url}", w.line()]
        (root / "witnesses").write_text("\n".join(lines) + "\n")
        log = DecisionLog(str(root), sync="never", checkpoint_every=10, witness_drain=0.5)
        try:
            for size in (10, 20, 30):
                fill(log, 10)
                done = wait_for(lambda: cosigned_newest(root, w.key.name), f"{size} cosigned", 8)
                assert done.size == size
        finally:
            log.close()
        fill_more = DecisionLog(str(root), sync="never", checkpoint_every=0)
        with fill_more:
            fill(fill_more, 5)
            fill_more.checkpoint()
        started = time.monotonic()
        pushed = rtrace("--dir", str(root), "witness", "push", "--timeout", "3")
        took = time.monotonic() - started
    assert took < 20, f"push took {took:.1f}s"
    assert pushed.returncode == 1, pushed.stderr
    states = {row["witness"]: row for row in map(json.loads, pushed.stdout.splitlines())}
    assert states["witness.test/slow"]["state"] == "unavailable"
    assert states["witness.test/ok"]["state"] == "cosigned"
    assert states["witness.test/ok"]["size"] == 35


def _witnessed(w: Running, origin: str) -> int:
    """The size ``w`` holds cosigned for ``origin`` (0: none)."""
    state = w.witness.state(origin)
    return 0 if state is None else state.size


def test_short_lived_writers_checkpoints_reach_the_witnesses(root: Path, tmp_path: Path) -> None:
    """Three ``rtrace record`` processes, each signing a checkpoint only on close: both live
    witnesses hold the newest (size 3). A checkpoint a writer could not deliver (its witness
    down) stays queued and is sent by the next process that records, before any new
    checkpoint is signed."""
    vkey = new_log(root)
    record = ("--dir", str(root), "record", "--action", "deploy", "--approved")
    port = free_port()
    with our_witness(tmp_path / "w1", "witness.test/w1") as w1:
        with our_witness(tmp_path / "w2", "witness.test/w2", port) as w2:
            for w in (w1, w2):
                w.witness.add_log(vkey)
            (root / "witnesses").write_text(f"{w1.line()}\n{w2.line()}\n")
            for _ in range(3):
                done = rtrace(*record)
                assert done.returncode == 0, done.stderr
            origin = Checkpoints(root).origin()
            assert origin is not None
            for w in (w1, w2):
                wait_for(lambda w=w: _witnessed(w, origin) == 3, f"{w.key.name} at 3")
        assert rtrace(*record).returncode == 0  # w2 is down: size 4 is not delivered to it
        wait_for(lambda: _witnessed(w1, origin) == 4, "w1 at 4")
    assert Checkpoints(root).latest().size == 4  # type: ignore[union-attr]
    with our_witness(tmp_path / "w2", "witness.test/w2", port) as w2:
        log = DecisionLog(str(root), sync="never", checkpoint_every=1000)
        try:
            fill(log, 1)  # no checkpoint signed yet: the queued one is sent
            wait_for(lambda: _witnessed(w2, origin) == 4, "w2 caught up to 4")
        finally:
            log.close()
        wait_for(lambda: _witnessed(w2, origin) == 5, "w2 at 5 after close")
