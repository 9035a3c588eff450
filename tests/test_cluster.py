"""A three-node JetStream cluster, a 3-replica stream, and ``kill -9`` of a follower and then
of the stream leader while a node records and replicates: afterwards the stream holds every
record exactly once, in order."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("nats")

import nats

from reasoning_trace import DecisionLog
from reasoning_trace.fleet import Fleet
from reasoning_trace.jetstream import decision_subject

from .conftest import all_lines
from .natsserver import Cluster, require_server


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A running three-node cluster, killed after the test."""
    require_server()
    c = Cluster(tmp_path / "nats").start()
    yield c
    c.stop()


async def quiet(exc: Exception) -> None:
    """Connection errors are expected while servers are killed."""


def stream_cluster(url: str) -> tuple[str | None, list[str], int]:
    """(leader, replicas, messages) of the RTRACE stream, or (None, [], 0) while unavailable."""

    async def ask() -> tuple[str | None, list[str], int]:
        """Ask any server for the stream's cluster info."""
        nc = await nats.connect(
            url.split(","), connect_timeout=1, max_reconnect_attempts=1, error_cb=quiet
        )
        try:
            info = await nc.jetstream(timeout=1).stream_info("RTRACE")
            c = info.cluster
            replicas = [r.name for r in (c.replicas or [])] if c else []
            return (c.leader if c else None), replicas, info.state.messages
        finally:
            await nc.close()

    try:
        return asyncio.run(ask())
    except Exception:  # noqa: BLE001 -- an election in progress: ask again
        return None, [], 0


def count(url: str) -> int:
    """Records of node ``a`` in the stream (-1 while it cannot answer)."""
    try:
        with Fleet(url) as fleet:
            return fleet.subjects(decision_subject("a")).get(decision_subject("a"), 0)
    except Exception:  # noqa: BLE001 -- the stream may be electing a leader right now
        return -1


def wait_for(predicate, what: str, timeout: float = 90.0) -> None:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_kill_9_follower_then_leader_loses_and_duplicates_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Every record the node wrote is in the R3 stream once, in order, after a follower and then
    the leader were killed with SIGKILL during replication."""
    root = tmp_path / "a"
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        with DecisionLog(str(root), node="a") as log:
            while not stop.is_set():
                log.record("upgrade", True, {"v": {"passed": True}}, {"n": written[0]})
                written[0] += 1
                time.sleep(0.002)

    DecisionLog(str(root), node="a").close()
    log_file = open(tmp_path / "replicate.log", "w")  # noqa: SIM115 -- the child's stderr
    rep = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reasoning_trace",
            "--dir",
            str(root),
            "replicate",
            "--nats",
            cluster.url,
            "--node",
            "a",
            "--replicas",
            "3",
        ],
        stderr=log_file,
    )
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        wait_for(lambda: count(cluster.url) >= 300, "first records")
        leader, replicas, _ = stream_cluster(cluster.url)
        assert leader is not None and len(replicas) == 2  # three copies

        follower = cluster.by_name(replicas[0])
        follower.kill(signal.SIGKILL)
        mark = count(cluster.url)
        wait_for(lambda: count(cluster.url) >= mark + 300, "replication with a follower dead")
        follower.start()

        wait_for(lambda: stream_cluster(cluster.url)[0] is not None, "a leader")
        old_leader = cluster.by_name(stream_cluster(cluster.url)[0])  # type: ignore[arg-type]
        old_leader.kill(signal.SIGKILL)
        wait_for(
            lambda: stream_cluster(cluster.url)[0] not in (None, old_leader.name),
            "a new stream leader",
        )
        mark = count(cluster.url)
        wait_for(lambda: count(cluster.url) >= mark + 300, "replication after the election")
        old_leader.start()
    finally:
        stop.set()
        thread.join(30)
    try:
        total = written[0]
        wait_for(lambda: count(cluster.url) == total, "catch-up", timeout=120)
    finally:
        rep.send_signal(signal.SIGTERM)
        assert rep.wait(30) == 0
        log_file.close()
        print((tmp_path / "replicate.log").read_text())  # shown with -s: retries, elections
    with Fleet(cluster.url) as fleet:
        stored = [m.data for m in fleet.messages(decision_subject("a"))]
    assert stored == all_lines(root)  # every record, exactly once, in order
    assert len(stored) == total
    for server in cluster.servers:  # every server answers with the whole history
        with Fleet(server.url) as fleet:
            assert fleet.subjects(decision_subject("a")) == {decision_subject("a"): total}
