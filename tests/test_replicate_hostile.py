"""Replication under attack and misuse: a rewritten history is never shipped, a foreign
message on a node's subject is stepped over, a lost stream is an incident, and the operator
is told what is going on (waiting, refused credentials, an open server), never a password."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("nats")


from reasoning_trace.errors import ForkError
from reasoning_trace.exactly_once import Publisher, ReplicationStatus
from reasoning_trace.jetstream import DEFAULT_STREAM, Problems, decision_subject, ensure_stream
from reasoning_trace.replicate import Replicator, StreamLost, replicate

from .conftest import all_lines
from .natsserver import NatsServer, free_port, require_server
from .test_replicate import EXAMPLES, fill, replicated, run


def rtrace(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``rtrace`` with ``args`` and return what it did."""
    return subprocess.run(
        [sys.executable, "-m", "reasoning_trace", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def publish_raw(url: str, subject: str, *payloads: bytes) -> list[int]:
    """Publish ``payloads`` on ``subject`` as any client could; their stream seqs."""

    async def go(js):  # type: ignore[no-untyped-def]
        """Publish each payload and collect its ack."""
        return [(await js.publish(subject, p)).seq for p in payloads]

    return run(go, url)  # type: ignore[no-any-return]


def rewrite_record(root: Path, seq: int) -> None:
    """Change record ``seq`` in its day file (keeping it a valid record), as an intruder would."""
    for path in sorted(root.glob("*.jsonl")):
        lines = path.read_bytes().splitlines(keepends=True)
        for i, line in enumerate(lines):
            record = json.loads(line)
            if record["seq"] == seq:
                record["approved"] = not record["approved"]
                lines[i] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
                lines[i] += b"\n"
                path.write_bytes(b"".join(lines))
                return
    raise AssertionError(f"no record {seq}")


def test_a_rewritten_and_re_signed_history_is_never_shipped(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """Record 100 rewritten after replication, re-signed with the node's key, then 300 more:
    replicate refuses with a fork naming record 100 and size 101, and ships nothing."""
    root = tmp_path / "a"
    fill(root, "a", 500)
    replicate(root, nats_server.url, node="a", until_caught_up=True)
    before = replicated(nats_server.url, "a")

    rewrite_record(root, 100)
    shutil.rmtree(root / "checkpoints")  # re-signed from scratch over the rewritten tree
    shutil.rmtree(root / ".rtrace", ignore_errors=True)
    fill(root, "a", 300, start=500)
    assert rtrace("--dir", str(root), "verify").returncode == 0  # locally, it looks fine

    done = rtrace(
        "--dir", str(root), "replicate", "--nats", nats_server.url, "--node", "a", "--once"
    )
    assert done.returncode == 1, done.stderr
    assert "record 100 differs" in done.stderr and "from size 101" in done.stderr
    assert "Traceback" not in done.stderr
    assert replicated(nats_server.url, "a") == before  # nothing shipped


def test_a_checkpoint_that_does_not_sign_the_local_tree_is_not_shipped(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """A forged local checkpoint (its root is not the local tree's) stops replication before it
    is shipped, even when the records look like plain appends."""
    root = tmp_path / "a"
    fill(root, "a", 50)
    replicate(root, nats_server.url, node="a", until_caught_up=True)
    fill(root, "a", 20, start=50)
    rewrite_record(root, 60)  # after the replicated checkpoint: the records ship, the note not
    shutil.rmtree(root / ".rtrace", ignore_errors=True)
    with pytest.raises(ForkError, match="does not sign the local tree of 70 records"):
        replicate(root, nats_server.url, node="a", until_caught_up=True)


def test_foreign_messages_on_a_node_subject_are_stepped_over(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """Non-records on a node's decision subject are reported (subject, stream seq) and
    replication resumes and continues after them, every record shipped once."""
    root = tmp_path / "a"
    fill(root, "a", 20)
    replicate(root, nats_server.url, node="a", until_caught_up=True)
    junk = publish_raw(nats_server.url, decision_subject("a"), b'{"seq":999999}', b"hello")
    fill(root, "a", 10, start=20)
    done = rtrace(
        "--dir", str(root), "replicate", "--nats", nats_server.url, "--node", "a", "--once"
    )
    assert done.returncode == 0, done.stderr
    assert "from seq 20" in done.stderr
    assert f"rtrace.a.decision #{junk[-1]}" in done.stderr
    lines = [x for x in replicated(nats_server.url, "a") if x not in (b'{"seq":999999}', b"hello")]
    assert lines == all_lines(root)


def test_a_foreign_message_published_while_shipping_is_stepped_over(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """A publish that finds a foreign message where it expected its own last one continues
    after it; one whose earlier try landed before the foreign message is resolved as landed."""
    fill(tmp_path / "a", "a", 3)
    lines = all_lines(tmp_path / "a")
    status = ReplicationStatus("a")
    publisher = Publisher(DEFAULT_STREAM, nats_server.url, Problems(), status, 2.0)
    subject = decision_subject("a")

    async def scenario(js):  # type: ignore[no-untyped-def]
        """Interleave our publishes with foreign ones."""
        await ensure_stream(js)
        never = lambda: False  # noqa: E731
        first = await publisher.publish(js, never, subject, lines[0], "a/0", 0)
        junk = (await js.publish(subject, b"hello")).seq
        second = await publisher.publish(js, never, subject, lines[1], "a/1", first)
        # An earlier try of the third landed (under another msg id), then a foreign message:
        landed = await js.publish(subject, lines[2], headers={"Nats-Msg-Id": "earlier-try"})
        junk2 = (await js.publish(subject, b"{}")).seq
        third = await publisher.publish(js, never, subject, lines[2], "a/2", second)
        return junk, second, landed.seq, junk2, third

    junk, second, landed, junk2, third = run(scenario, nats_server.url)
    assert landed < junk2
    assert second == junk + 1 and third == junk2  # the subject's last message, to expect next
    assert status.resolved == 1
    assert (subject, junk) in status.foreign and (subject, junk2) in status.foreign
    assert [x for x in replicated(nats_server.url, "a") if x.startswith(b'{"a')] == lines


def test_a_deleted_stream_is_an_incident_not_refilled(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """After the stream that held a node's history is deleted, replicate exits 1 naming the
    incident and creates nothing; --reship ships the log again from seq 0."""
    root = tmp_path / "a"
    fill(root, "a", 30)
    replicate(root, nats_server.url, node="a", until_caught_up=True)

    async def delete(js):  # type: ignore[no-untyped-def]
        """Delete the stream, as anyone may on a server without accounts."""
        await js.delete_stream("RTRACE")

    run(delete, nats_server.url)
    args = ("--dir", str(root), "replicate", "--nats", nats_server.url, "--node", "a", "--once")
    done = rtrace(*args)
    assert done.returncode == 1, done.stderr
    assert "incident" in done.stderr and "records 0..29" in done.stderr

    async def names(js):  # type: ignore[no-untyped-def]
        """The stream names on the server."""
        return [s.config.name for s in await js.streams_info()]

    assert run(names, nats_server.url) == []
    again = rtrace(*args, "--reship")
    assert again.returncode == 0, again.stderr
    assert replicated(nats_server.url, "a") == all_lines(root)


def test_a_stream_deleted_under_a_running_replicator_stops_it(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """A running replicator whose stream is deleted stops with ``StreamLost`` instead of
    re-creating it or retrying forever."""
    root = tmp_path / "a"
    fill(root, "a", 10)
    rep = Replicator(root, nats_server.url, node="a")
    outcome: list[BaseException] = []
    stop = threading.Event()

    def go() -> None:
        """Run the replicator, keeping what it raised."""
        try:
            rep.run(stop.is_set)
        except BaseException as exc:  # noqa: BLE001 -- the outcome under test
            outcome.append(exc)

    thread = threading.Thread(target=go)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while rep.status.next_seq < 10:
            assert time.monotonic() < deadline
            time.sleep(0.02)

        async def delete(js):  # type: ignore[no-untyped-def]
            """Delete the stream."""
            await js.delete_stream("RTRACE")

        run(delete, nats_server.url)
        fill(root, "a", 5, start=10)
        thread.join(60)
    finally:
        stop.set()
        thread.join(30)
    assert outcome and isinstance(outcome[0], StreamLost), outcome
    assert "deleted" in str(outcome[0])


def test_replicate_says_it_waits_and_stops_on_sigterm(tmp_path: Path) -> None:
    """With no server, replicate says it is waiting for one, and SIGTERM ends it promptly."""
    fill(tmp_path / "a", "a", 1)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reasoning_trace",
            "--dir",
            str(tmp_path / "a"),
            "replicate",
            "--nats",
            f"nats://user:s3cret@127.0.0.1:{port}",
            "--node",
            "a",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    try:
        seen = ""
        deadline = time.monotonic() + 30
        while "waiting for a NATS server" not in seen:
            assert time.monotonic() < deadline, seen
            seen += proc.stderr.readline()
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        seen += proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == 0
    assert "s3cret" not in seen and "user:***@" in seen
    assert "stopped: nothing of a was replicated" in seen and "0..-1" not in seen
    assert "Traceback" not in seen


def test_refused_credentials_are_told_apart_from_an_unreachable_server(tmp_path: Path) -> None:
    """A wrong password exits 2 saying the server refused the credentials (without printing
    them); a URL without a scheme is taken as nats://; another scheme is refused cleanly."""
    require_server()
    srv = NatsServer(tmp_path / "nats", extra='include "accounts.conf"')
    shutil.copy(EXAMPLES / "accounts.conf", srv.dir)
    srv.start()
    try:
        fill(tmp_path / "a", "gate-1", 3)
        base = ("--dir", str(tmp_path / "a"), "replicate", "--node", "gate-1", "--once")
        wrong = rtrace(*base, "--nats", f"nats://gate-1:wrong-pass@127.0.0.1:{srv.port}")
        assert wrong.returncode == 2, wrong.stderr
        assert "refused the credentials" in wrong.stderr
        assert "wrong-pass" not in wrong.stderr and "Traceback" not in wrong.stderr

        bare = rtrace(*base, "--nats", f"gate-1:change-me-gate-1@127.0.0.1:{srv.port}")
        assert bare.returncode == 0, bare.stderr
        assert "change-me-gate-1" not in bare.stderr
        assert "takes no credentials" not in bare.stderr
    finally:
        srv.kill()
    http = rtrace(*base, "--nats", "http://127.0.0.1:1")
    assert http.returncode == 2 and "is not a NATS URL" in http.stderr
    assert "Traceback" not in http.stderr


def test_an_open_server_is_called_out(nats_server: NatsServer, tmp_path: Path) -> None:
    """Replicating to a server that takes no credentials warns that anyone may delete or
    limit the stream."""
    fill(tmp_path / "a", "a", 2)
    done = rtrace(
        "--dir",
        str(tmp_path / "a"),
        "replicate",
        "--nats",
        nats_server.url,
        "--node",
        "a",
        "--once",
    )
    assert done.returncode == 0, done.stderr
    assert "takes no credentials" in done.stderr and "delete stream RTRACE" in done.stderr


def test_urls_are_shown_without_passwords_or_tokens() -> None:
    """``redact_url`` hides passwords and tokens in every server of a list."""
    from reasoning_trace.jetstream import redact_url

    assert (
        redact_url("nats://u:pw@h:1,tok@h2:2,nats://h3:3")
        == "nats://u:***@h:1,***@h2:2,nats://h3:3"
    )
