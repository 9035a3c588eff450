"""Fleet mode on a log the original module started: its legacy prefix (torn lines included) is
shipped as leaves, read back as the local reader reads it, and verifies from the stream; lines
the original appends beside the product (a rolling upgrade) are no leaves on either side."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

pytest.importorskip("nats")

import nats

from reasoning_trace import DecisionLog
from reasoning_trace.day_files import DayFiles
from reasoning_trace.jetstream import DEFAULT_STREAM, decision_subject
from reasoning_trace.layout import Layout
from reasoning_trace.replicate import replicate
from reasoning_trace.verify import verify
from reasoning_trace.verify_replica import compare_with_replica, verify_node

from .natsserver import NatsServer
from .test_fleet import rtrace
from .test_legacy import EPOCH, write_original

NODE = "east"
OPEN = {"allow_open_server": True}


def original_with_torn_line(root: Path) -> None:
    """Five decisions of the original module, a torn line among them."""
    write_original(root, 5, datetime(2026, 5, 11, 12), timedelta(seconds=1))
    day = root / "2026-05-11.jsonl"
    lines = day.read_bytes().splitlines(keepends=True)
    torn = lines[2][: len(lines[2]) // 2] + b"\n"
    day.write_bytes(b"".join([*lines[:2], torn, *lines[2:]]))


#: The product's clock in these tests: a fixed UTC day (never today's), a millisecond a read.
T0 = datetime(2026, 5, 12, 10)


def adopt_and_record(root: Path, count: int, start: int = 0) -> None:
    """``count`` records of the product, numbered from ``start``, ``10 * start`` s after T0."""
    first = (T0 + timedelta(seconds=10 * start) - EPOCH) // timedelta(microseconds=1)
    ticks = itertools.count(first, 1000)
    with DecisionLog(str(root), node=NODE, clock=lambda: next(ticks) * 1000) as log:
        for i in range(start, start + count):
            log.record("after", True, {"ops": {"passed": True}}, {"agent_id": "new", "i": i})


def leaves(root: Path) -> list[bytes]:
    """The leaf inputs of the local tree, in order."""
    return list(DayFiles(Layout(root)).leaves_from(0))


def vkey(root: Path) -> str:
    """The verifier keys the log published."""
    return (root / "checkpoints" / "vkey").read_text()


def test_an_adopted_original_log_verifies_from_the_stream(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """The original module's log (a torn line in it), adopted and replicated: verified from
    the stream, compared with the local leaves, read back by the fleet commands."""
    root = tmp_path / "east"
    original_with_torn_line(root)
    adopt_and_record(root, 4)
    assert verify(root).ok
    local = leaves(root)
    assert len(local) == 10  # 6 prefix lines (one torn) and 4 records
    replicate(root, nats_server.url, node=NODE, until_caught_up=True)

    report = verify_node(nats_server.url, NODE, vkey(root), **OPEN)
    assert report.ok, report.failures
    assert report.records == len(local) and report.signed_size == len(local)
    compared = compare_with_replica(root, nats_server.url, NODE, vkey(root), **OPEN)
    assert compared.ok and compared.records == len(local), compared.failures

    src = ("--source", nats_server.url)
    tail = [json.loads(x) for x in rtrace(*src, "tail", "-n", "20", "--json").stdout.splitlines()]
    assert [d["subject"].get("i") for d in tail] == [0, 1, 2, 3, 4, 0, 1, 2, 3]
    assert [d["action"] for d in tail][-4:] == ["after"] * 4  # the torn line is no decision
    legacy = rtrace(*src, "query", "--action", "rollback", "--format", "json").stdout
    assert [json.loads(x)["subject"]["i"] for x in legacy.splitlines()] == [0, 3]

    replicate(root, nats_server.url, node=NODE, until_caught_up=True)  # resumes: nothing new
    assert verify_node(nats_server.url, NODE, vkey(root), **OPEN).records == len(local)


def test_a_rolling_upgrade_replicates_and_verifies(nats_server: NatsServer, tmp_path: Path) -> None:
    """The original module writing beside the product after adoption: its lines are taken in
    as records, are no leaves on either side, and the replica verifies."""
    root = tmp_path / "east"
    original_with_torn_line(root)
    adopt_and_record(root, 2)
    beside = T0 + timedelta(seconds=5)  # in the day file the product writes
    write_original(root, 3, beside, timedelta(milliseconds=1))  # the original, beside it
    adopt_and_record(root, 2, start=2)  # takes the original's new lines in as records
    assert verify(root).ok
    local = leaves(root)
    assert len(local) == 6 + 2 + 3 + 2
    replicate(root, nats_server.url, node=NODE, until_caught_up=True)

    report = verify_node(nats_server.url, NODE, vkey(root), **OPEN)
    assert report.ok and report.records == len(local), report.failures
    compared = compare_with_replica(root, nats_server.url, NODE, vkey(root), **OPEN)
    assert compared.ok and compared.records == len(local), compared.failures


async def publish(url: str, data: bytes) -> None:
    """Publish ``data`` on the node's decision subject, as anyone with publish rights could."""
    nc = await nats.connect(url)
    try:
        await nc.jetstream().publish(decision_subject(NODE), data, stream=DEFAULT_STREAM)
    finally:
        await nc.close()


def test_alterations_and_foreign_messages_are_still_found(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """A local leaf changed after replication is altered; a message that is neither a record
    nor a legacy line of the node is a foreign message."""
    import asyncio

    root = tmp_path / "east"
    original_with_torn_line(root)
    adopt_and_record(root, 3)
    replicate(root, nats_server.url, node=NODE, until_caught_up=True)

    day = root / "2026-05-11.jsonl"
    data = day.read_bytes()
    day.write_bytes(data.replace(b'"reason": "reason 1"', b'"reason": "reason X"', 1))
    compared = compare_with_replica(root, nats_server.url, NODE, vkey(root), **OPEN)
    assert [f.seq_from for f in compared.failures if f.kind == "altered"] == [1]

    for foreign in (b"hello", data.splitlines()[0]):  # a legacy line without its id: foreign
        asyncio.run(publish(nats_server.url, foreign))
    report = verify_node(nats_server.url, NODE, vkey(root), **OPEN)
    assert [f.kind for f in report.failures] == ["foreign_message", "foreign_message"]
    assert report.records == 9
