"""Replication to a real nats-server: exactly once, in order, through restarts and outages."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("nats")

import nats
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import APIError

from reasoning_trace import DecisionLog, ForkError
from reasoning_trace.errors import ReplicationError, StreamConfigError
from reasoning_trace.exactly_once import Publisher, ReplicationStatus
from reasoning_trace.fleet import Fleet
from reasoning_trace.jetstream import DEFAULT_STREAM, Problems, decision_subject, ensure_stream
from reasoning_trace.replicate import Replicator, replicate
from reasoning_trace.verify_replica import verify_node

from .conftest import all_lines
from .natsserver import NatsServer, require_server

HERE = Path(__file__).parent
EXAMPLES = HERE.parent / "examples" / "nats-server"


def fill(root: Path, node: str, n: int, start: int = 0) -> None:
    """Record ``n`` decisions as ``node`` in the log at ``root``."""
    with DecisionLog(str(root), node=node) as log:
        for i in range(start, start + n):
            log.record(
                "deploy" if i % 2 else "rollback",
                i % 3 != 0,
                {"safety": {"passed": i % 3 != 0}, "cost": {"passed": True}},
                {"agent_id": node, "n": i},
            )


def replicated(url: str, node: str, stream: str = "RTRACE") -> list[bytes]:
    """The stored lines the stream holds for ``node``, in stream order."""
    with Fleet(url, stream=stream) as fleet:
        return [m.data for m in fleet.messages(decision_subject(node))]


def run(coro_fn, url: str):  # type: ignore[no-untyped-def]
    """Run ``coro_fn(js)`` on a fresh connection to ``url``."""

    async def main():  # type: ignore[no-untyped-def]
        """Connect, run, disconnect."""
        nc = await nats.connect(url)
        try:
            return await coro_fn(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(main())


def test_several_nodes_replicate_exactly_once_in_order(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """Three nodes' logs land in the stream byte for byte, once, in order, with checkpoints that
    verify."""
    for node, n in (("alpha", 1500), ("beta", 700), ("gamma", 1)):
        fill(tmp_path / node, node, n)
        status = replicate(tmp_path / node, nats_server.url, node=node, until_caught_up=True)
        assert status.records == n
        assert status.next_seq == n
    for node in ("alpha", "beta", "gamma"):
        assert replicated(nats_server.url, node) == all_lines(tmp_path / node)
        vkey = (tmp_path / node / "checkpoints" / "vkey").read_text()
        report = verify_node(nats_server.url, node, vkey, allow_open_server=True)
        assert report.ok, report.failures
        assert report.signed_size == report.records  # the closing checkpoint is replicated too
    with Fleet(nats_server.url) as fleet:
        assert fleet.nodes() == ["alpha", "beta", "gamma"]
        assert len(fleet) == 2201
    # Running again ships nothing: resumption comes from the stream itself.
    assert (
        replicate(tmp_path / "alpha", nats_server.url, node="alpha", until_caught_up=True).records
        == 0
    )


def test_the_stream_is_created_safe_and_refuses_delete_and_purge(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """The stream the product creates keeps history, and refuses deleting a record or purging."""
    fill(tmp_path / "a", "a", 10)
    replicate(tmp_path / "a", nats_server.url, node="a", until_caught_up=True)

    async def attack(js):  # type: ignore[no-untyped-def]
        """Try to delete a record and to purge the stream."""
        info = await js.stream_info("RTRACE")
        refused = []
        for attempt in (lambda: js.delete_msg("RTRACE", 1), lambda: js.purge_stream("RTRACE")):
            try:
                await attempt()
            except APIError as exc:
                refused.append(exc.description)
        return info.config, refused, (await js.stream_info("RTRACE")).state.messages

    config, refused, messages = run(attack, nats_server.url)
    assert config.deny_delete and config.deny_purge and not config.allow_rollup_hdrs
    assert config.max_age == 0 and config.max_msgs == -1 and config.max_bytes == -1
    assert getattr(config.discard, "value", config.discard) == "new"
    assert getattr(config.storage, "value", config.storage) == "file"
    assert len(refused) == 2
    assert messages == 10 + 1 + 1  # ten records, the key, the closing checkpoint
    assert replicated(nats_server.url, "a") == all_lines(tmp_path / "a")


def test_a_stream_that_lets_history_expire_is_refused_and_warned_about(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """An existing stream with a max_age is refused by the replicator and noted by verify."""

    async def make(js):  # type: ignore[no-untyped-def]
        """Create a leaky stream and check that ensure_stream refuses it."""
        await js.add_stream(
            StreamConfig(
                name="LEAKY",
                subjects=["rtrace.>"],
                storage=StorageType.FILE,
                max_age=3600,
                deny_delete=True,
                deny_purge=True,
            )
        )
        await js.publish("rtrace.a.decision", b"{}")
        with pytest.raises(StreamConfigError, match="max_age is 3600 s"):
            await ensure_stream(js, "LEAKY")

    run(make, nats_server.url)
    report = verify_node(nats_server.url, "a", stream="LEAKY", trust_stream_keys=True)
    assert any(f.kind == "expiring_stream" and "max_age" in f.message for f in report.findings)
    fill(tmp_path / "a", "a", 3)
    with pytest.raises(StreamConfigError):
        replicate(tmp_path / "a", nats_server.url, node="a", stream="LEAKY", until_caught_up=True)


def test_a_consumer_sees_only_the_subject_it_asked_for(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """A consumer filtered to one node's decisions gets nothing else (2.9 has one filter
    subject)."""
    for node in ("a", "b"):
        fill(tmp_path / node, node, 20)
        replicate(tmp_path / node, nats_server.url, node=node, until_caught_up=True)
    with Fleet(nats_server.url) as fleet:
        subjects = {m.subject for m in fleet.messages(decision_subject("a"))}
        everything = {m.subject for m in fleet.messages("rtrace.>")}
    assert subjects == {"rtrace.a.decision"}
    assert everything == {
        "rtrace.a.decision",
        "rtrace.a.checkpoint",
        "rtrace.a.key",
        "rtrace.b.decision",
        "rtrace.b.checkpoint",
        "rtrace.b.key",
    }


def test_another_log_under_the_same_node_name_is_a_fork(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """A second log replicating under a taken node name is refused as a fork."""
    fill(tmp_path / "one", "x", 5)
    fill(tmp_path / "two", "x", 8)
    replicate(tmp_path / "one", nats_server.url, node="x", until_caught_up=True)
    with pytest.raises(ForkError, match="another record 4"):
        replicate(tmp_path / "two", nats_server.url, node="x", until_caught_up=True)
    assert replicated(nats_server.url, "x") == all_lines(tmp_path / "one")


def test_wrong_last_sequence_is_resolved_by_reading_the_subject(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """A publish that landed but whose ack was lost, retried where the duplicate check does
    not catch it (as after a leader change on R3): resolved as landed, not a failure."""
    fill(tmp_path / "a", "a", 2)
    lines = all_lines(tmp_path / "a")
    status = ReplicationStatus("a")
    publisher = Publisher(DEFAULT_STREAM, nats_server.url, Problems(), status, 2.0)

    async def scenario(js):  # type: ignore[no-untyped-def]
        """Store the record under another msg id, then publish it as a retry would."""
        await ensure_stream(js)
        first = await js.publish(
            "rtrace.a.decision",
            lines[0],
            headers={"Nats-Msg-Id": "an-earlier-try", "Nats-Expected-Last-Subject-Sequence": "0"},
        )
        never = lambda: False  # noqa: E731
        seq = await publisher.publish(js, never, "rtrace.a.decision", lines[0], "a/x", 0)
        with pytest.raises(ForkError, match="another writer"):
            await publisher.publish(js, never, "rtrace.a.decision", lines[1], "a/y", 0)
        return first.seq, seq

    first, resolved = run(scenario, nats_server.url)
    assert resolved == first
    assert status.resolved == 1
    assert replicated(nats_server.url, "a") == lines[:1]


def _rtrace(*args: str) -> list[str]:
    """The command line of ``rtrace`` with ``args``."""
    return [sys.executable, "-m", "reasoning_trace", *args]


def _count(url: str, node: str) -> int:
    """Records of ``node`` in the stream (0 before the stream exists)."""
    try:
        fleet = Fleet(url)
    except ReplicationError:  # no stream yet
        return 0
    with fleet:
        return fleet.subjects(decision_subject(node)).get(decision_subject(node), 0)


def _wait(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_killed_replicator_resumes_exactly_where_it_stopped(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """A replicator killed with SIGKILL mid-stream resumes from the stream's end: nothing twice,
    nothing missing."""
    root = tmp_path / "a"
    fill(root, "a", 6000)
    proc = subprocess.Popen(
        _rtrace("--dir", str(root), "replicate", "--nats", nats_server.url, "--node", "a"),
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: _count(nats_server.url, "a") >= 1000)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        shipped = _count(nats_server.url, "a")
        assert 1000 <= shipped < 6000  # stopped mid-stream
        fill(root, "a", 500, start=6000)  # and the node kept deciding meanwhile
    finally:
        if proc.poll() is None:
            proc.kill()
    done = subprocess.run(
        _rtrace(
            "--dir", str(root), "replicate", "--nats", nats_server.url, "--node", "a", "--once"
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"from seq {shipped}" in done.stderr
    assert replicated(nats_server.url, "a") == all_lines(root)


def test_a_server_outage_loses_and_duplicates_nothing(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """Local writes go on while the server is dead; replication catches up once it is back."""
    root = tmp_path / "a"
    fill(root, "a", 200)
    stop = threading.Event()
    rep = Replicator(root, nats_server.url, node="a")
    thread = threading.Thread(target=rep.run, args=(stop.is_set,))
    thread.start()
    try:
        _wait(lambda: rep.status.next_seq == 200)
        nats_server.kill()  # SIGKILL: the server is gone mid-replication
        fill(root, "a", 300, start=200)  # local writes go on
        _wait(lambda: rep.status.retries > 0)  # it noticed the outage and keeps trying
        assert rep.status.next_seq < 500
        nats_server.start()
        _wait(lambda: rep.status.next_seq == 500)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert replicated(nats_server.url, "a") == all_lines(root)


def test_example_accounts_deny_writers_stream_delete_and_update(tmp_path: Path) -> None:
    """With the shipped accounts, a writer cannot delete the stream or raise its max_age."""
    require_server()
    srv = NatsServer(tmp_path / "nats", extra='include "accounts.conf"')
    shutil.copy(EXAMPLES / "accounts.conf", srv.dir)  # includes are relative to the config
    srv.start()
    try:
        writer = f"nats://gate-1:change-me-gate-1@127.0.0.1:{srv.port}"
        admin = f"nats://admin:change-me-admin@127.0.0.1:{srv.port}"
        fill(tmp_path / "a", "gate-1", 5)
        assert replicate(tmp_path / "a", writer, node="gate-1", until_caught_up=True).records == 5

        async def attack(js):  # type: ignore[no-untyped-def]
            """Try to delete the stream and to give it a max_age."""
            outcomes = []
            leaky = StreamConfig(name="RTRACE", subjects=["rtrace.>"], max_age=60)
            for attempt in (lambda: js.delete_stream("RTRACE"), lambda: js.update_stream(leaky)):
                try:
                    await attempt()
                    outcomes.append("done")
                except Exception as exc:  # noqa: BLE001 -- refused either way; which is shown
                    outcomes.append(type(exc).__name__)
            return outcomes

        async def state(js):  # type: ignore[no-untyped-def]
            """The stream's max_age and message count, as the admin sees them."""
            info = await js.stream_info("RTRACE")
            return info.config.max_age, info.state.messages

        outcomes = run(attack, writer)
        assert "done" not in outcomes, outcomes
        assert run(state, admin) == (0, 5 + 2)
        assert replicated(writer, "gate-1") == all_lines(tmp_path / "a")
    finally:
        srv.kill()


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_replicate_needs_a_valid_node_name(tmp_path: Path) -> None:
    """A node name that is not a subject token is refused with exit 2, naming it."""
    fill(tmp_path / "a", "a", 1)
    done = subprocess.run(
        _rtrace(
            "--dir",
            str(tmp_path / "a"),
            "replicate",
            "--nats",
            "nats://127.0.0.1:1",
            "--node",
            "a.b",
        ),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "node name 'a.b'" in done.stderr


def test_progress_is_logged_while_records_flow(
    nats_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator sees how far the stream's copy reaches and how late it is."""
    fill(tmp_path / "a", "a", 300)
    caplog.set_level("INFO", logger="reasoning_trace")
    Replicator(tmp_path / "a", nats_server.url, node="a", batch=100, report_every=0).run(
        until_caught_up=True
    )
    progress = [r.getMessage() for r in caplog.records if "shipped" in r.getMessage()]
    assert progress, caplog.text
    assert "the stream holds seqs 0..299 of 300" in progress[-1]
    assert "lag p99" in progress[-1]


def test_the_example_server_configuration_is_valid() -> None:
    """``examples/nats-server/server.conf`` (with its accounts) passes nats-server's own check."""
    require_server()
    from .natsserver import BINARY

    done = subprocess.run(
        [BINARY, "-c", "server.conf", "-t"], cwd=EXAMPLES, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "is valid" in done.stdout + done.stderr
