"""Fleet reads at scale: filters narrow what is fetched from the stream, and the fleet index in
the user's cache answers query and stats as the stream does, incrementally, rebuilding itself
when the stream is re-created or the cache is deleted."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

pytest.importorskip("nats")

from reasoning_trace.fleet import Fleet
from reasoning_trace.jetstream import decision_subject
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
