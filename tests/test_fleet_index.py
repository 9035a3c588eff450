"""Fleet reads at scale: filters narrow what is fetched from the stream, and the fleet index in
the user's cache answers query and stats as the stream does, incrementally, rebuilding itself
when the stream is re-created or the cache is deleted."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("nats")

from reasoning_trace.fleet import Fleet
from reasoning_trace.jetstream import decision_subject, ensure_stream
from reasoning_trace.query import Filter

from .natsserver import NatsServer
from .test_fleet import record_alternating, ship
from .test_replicate import run
from .test_replicate_hostile import publish_raw

FILTERS = [
    Filter(),
    Filter(action="rollback"),
    Filter(approved=False),
    Filter(voter="safety"),
    Filter(node="west"),
    Filter(node="east", action="upgrade"),
    Filter(subject={"round": "7"}),
    Filter(subject={"agent_id": "east-agent"}, voter="safety"),
]


def lines(found: list) -> list[bytes]:  # type: ignore[type-arg]
    """The stored lines of decisions."""
    return [d.line for d in found]


def test_the_index_answers_as_the_stream_does(nats_server: NatsServer, tmp_path: Path) -> None:
    """query (with limits, newest first) and stats agree between the stream and the index for
    every kind of filter, before and after more records arrive, with foreign messages."""
    record_alternating(tmp_path, 30)
    ship(tmp_path, nats_server.url)
    [junk] = publish_raw(nats_server.url, decision_subject("east"), b"hello")
    cache = tmp_path / "cache.sqlite"
    with Fleet(nats_server.url) as stream, Fleet(nats_server.url, index=cache) as indexed:
        for round_ in range(2):
            for flt in FILTERS:
                assert lines(indexed.query(flt)) == lines(stream.query(flt)), flt
                assert indexed.stats(flt) == stream.stats(flt), flt
                for limit in (0, 1, 5):
                    assert lines(indexed.query(flt, limit=limit, newest_first=True)) == lines(
                        stream.query(flt, limit=limit, newest_first=True)
                    ), (flt, limit)
            assert ("rtrace.east.decision", junk) in indexed.foreign
            if round_ == 0:
                record_alternating(tmp_path, 5, start=30)
                ship(tmp_path, nats_server.url)
        assert indexed.stats().total == 70
        assert indexed._index is not None and indexed._index.catch_up() == 0  # incremental


def test_the_index_starts_afresh_for_a_re_created_stream_or_a_deleted_file(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """The index is derived: a re-created stream or a deleted cache file is rebuilt from the
    stream."""
    record_alternating(tmp_path / "one", 4)
    ship(tmp_path / "one", nats_server.url)
    cache = tmp_path / "cache.sqlite"
    with Fleet(nats_server.url, index=cache) as fleet:
        assert fleet.stats().total == 8

    async def delete(js):  # type: ignore[no-untyped-def]
        """Delete the stream (an incident, but the index must not keep the old records)."""
        await js.delete_stream("RTRACE")

    run(delete, nats_server.url)
    record_alternating(tmp_path / "two", 3)
    ship(tmp_path / "two", nats_server.url)
    with Fleet(nats_server.url, index=cache) as fleet:
        assert fleet.stats().total == 6
    cache.unlink()
    with Fleet(nats_server.url, index=cache) as fleet:
        assert fleet.stats().total == 6


def test_time_ranges_and_tails_are_found_by_binary_search(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """since/until and recent(n) fetched by binary search equal a full read, with foreign
    messages among the records."""
    record_alternating(tmp_path, 20)
    ship(tmp_path, nats_server.url)
    publish_raw(nats_server.url, decision_subject("east"), b"{}", b"x")
    record_alternating(tmp_path, 20, start=20)
    ship(tmp_path, nats_server.url)
    rng = random.Random(7)
    with Fleet(nats_server.url) as fleet:
        everything = list(fleet.decisions())
        assert [d.timestamp for d in everything] == sorted(d.timestamp for d in everything)
        stamps = sorted(round(d.timestamp * 1_000_000) for d in everything)
        cuts = [stamps[0] - 1, stamps[0], stamps[-1], stamps[-1] + 1]
        cuts += rng.sample(stamps, 8) + [s + 1 for s in rng.sample(stamps, 4)]
        for since in cuts:
            for until in (None, since + 1, since + 3_000, stamps[-1] + 1):
                flt = Filter(since_us=since, until_us=until)
                expected = [d for d in everything if flt.matches(d)]
                assert lines(fleet.query(flt)) == lines(expected), (since, until)
            node = Filter(since_us=since, node="west")
            assert lines(fleet.query(node)) == lines([d for d in everything if node.matches(d)])
        for n in (1, 3, 39, 40, 41):
            tail = fleet.recent(n, node="east")
            assert lines(tail) == lines([d for d in everything if d.node == "east"][-n:])


def synthetic(node: str, seq: int, micros: int) -> bytes:
    """A stored record line of ``node`` at ``micros`` (a fixed past instant, not today)."""
    from reasoning_trace.record import format_utc

    record = {
        "v": 1,
        "seq": seq,
        "id": f"{node}-{seq}",
        "timestamp": micros / 1_000_000,
        "datetime_utc": format_utc(micros),
        "action": ("upgrade", "rollback", "halt")[seq % 3],
        "approved": seq % 4 != 0,
        "votes": {"safety": {"passed": seq % 4 != 0}, "cost": {"passed": seq % 6 != 0}},
        "subject": {"agent_id": f"agent-{seq % 2}"},
        "reason": "",
        "node": node,
    }
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def test_index_stats_over_time_ranges_split_whole_and_partial_days(
    nats_server: NatsServer,
) -> None:
    """Index stats over ranges that start and end mid-day, on day boundaries, or inside one
    day equal stats from the stream."""
    day = 86_400_000_000
    t0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
    lines_of: dict[str, list[bytes]] = {"n1": [], "n2": []}
    for i in range(240):  # ten days, a record every hour per node, offset between nodes
        for k, node in enumerate(lines_of):
            lines_of[node].append(synthetic(node, i, t0 + i * day // 24 + k * 600_000_000))

    async def load(js):  # type: ignore[no-untyped-def]
        """Create the stream and publish both nodes' lines."""
        await ensure_stream(js)
        for i in range(240):
            for node, node_lines in lines_of.items():
                await js.publish(decision_subject(node), node_lines[i])

    run(load, nats_server.url)
    cuts = [None, t0, t0 + day, t0 + 3 * day + 1, t0 + 5 * day // 2, t0 + 7 * day, t0 + 20 * day]
    with Fleet(nats_server.url) as stream, Fleet(nats_server.url, index=True) as indexed:
        for since in cuts:
            for until in cuts:
                if since is not None and until is not None and until <= since:
                    continue
                for extra in ({}, {"node": "n2"}, {"action": "halt", "approved": False}):
                    flt = Filter(since_us=since, until_us=until, **extra)  # type: ignore[arg-type]
                    assert indexed.stats(flt) == stream.stats(flt), flt
        assert indexed.stats(Filter(since_us=t0 + day, until_us=t0 + 2 * day)).total == 48
