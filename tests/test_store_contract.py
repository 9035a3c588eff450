"""The storage contract of ``store.py``, checked on every backend through ``DecisionLog``: the
file store, and the JetStream store on a real nats-server (for writers without a disk)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reasoning_trace import ConflictError, DecisionLog, NotFound, RecordError, StorageError

from .natsserver import NatsServer, require_server

Opener = Callable[[], DecisionLog]


@pytest.fixture(scope="module")
def shared_nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server for the module's JetStream cases."""
    require_server()
    pytest.importorskip("nats")
    srv = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield srv
    srv.kill()


@pytest.fixture(params=["files", "jetstream"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens one log (each call another writer of the same log)."""
    if request.param == "files":
        return lambda: DecisionLog(str(tmp_path / "log"))
    srv: NatsServer = request.getfixturevalue("shared_nats_server")
    from reasoning_trace.jetstream_store import JetStreamStore

    node = request.node.name.split("[")[0][-40:].replace(".", "_")
    key = tmp_path / "jetstream.key"
    return lambda: DecisionLog(
        store=JetStreamStore(srv.url, node, key=key, stream="CONTRACT", checkpoint_every=50)
    )


def gate(log: DecisionLog, i: int, **kw: object) -> object:
    """Record one gate decision numbered ``i``."""
    return log.record(
        "upgrade" if i % 2 else "halt",
        i % 3 != 0,
        {"safety": {"passed": i % 3 != 0}},
        {"agent_id": "a", "i": i},
        **kw,  # type: ignore[arg-type]
    )


def test_seqs_are_consecutive_and_reads_find_them(opener: Opener) -> None:
    """Seqs run from 0 without gaps, and every read path finds the records."""
    with opener() as log:
        made = [gate(log, i) for i in range(120)]
        assert [d.seq for d in made] == list(range(120))  # type: ignore[attr-defined]
        assert len(log) == 120
        assert [d.line for d in log.read(10, 20)] == [d.line for d in made[10:20]]  # type: ignore[attr-defined]
        assert [d.seq for d in log.recent(5)] == [115, 116, 117, 118, 119]
        assert log.get(7).line == made[7].line  # type: ignore[attr-defined]
        assert log.get(made[9].id).seq == 9  # type: ignore[attr-defined]
        with pytest.raises(NotFound):
            log.get(500)
        with pytest.raises(NotFound):
            log.get("no-such-id")
        stats = log.stats()
        assert stats.total == 120 and stats.approved == 80
        assert len(log.query(log_filter(action="halt"))) == 60


def log_filter(**kw: object):  # type: ignore[no-untyped-def]
    """A ``Filter`` from keyword arguments."""
    from reasoning_trace import Filter

    return Filter.build(**kw)  # type: ignore[arg-type]


def test_caller_ids_are_idempotent_and_conflicts_consume_no_seq(opener: Opener) -> None:
    """A retried caller id returns the stored decision; a conflict or a refusal uses no seq."""
    with opener() as log:
        first = gate(log, 1, id="deploy-42")
        again = gate(log, 1, id="deploy-42")
        assert again == first
        with pytest.raises(ConflictError):
            gate(log, 2, id="deploy-42")
        with pytest.raises(RecordError):
            log.record("x", True, {}, {"bad": object()})
        assert len(log) == 1
        assert gate(log, 3).seq == 1  # type: ignore[attr-defined]


def test_two_writers_of_one_log_never_share_a_seq(opener: Opener) -> None:
    """Two writers of one log, concurrently: 300 records, seqs 0..299, no id twice."""
    a, b = opener(), opener()
    try:
        threads = [
            threading.Thread(target=lambda w=w: [gate(w, i) for i in range(150)]) for w in (a, b)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        records = list(a.read(0))
        assert [d.seq for d in records] == list(range(300))
        assert len({d.id for d in records}) == 300
    finally:
        a.close()
        b.close()


def test_eight_threads_of_one_writer_get_consecutive_seqs(opener: Opener) -> None:
    """Threads of one log share batches; every record is stored once with its own seq."""
    with opener() as log:
        made: list[object] = []
        threads = [
            threading.Thread(
                target=lambda t=t: made.extend(gate(log, t * 100 + i) for i in range(50))
            )
            for t in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        records = list(log.read(0))
        assert [d.seq for d in records] == list(range(400))
        assert sorted(d.seq for d in made) == list(range(400))  # type: ignore[attr-defined]
        assert {d.line for d in made} == {d.line for d in records}  # type: ignore[attr-defined]


def test_follow_sees_another_writers_records(opener: Opener) -> None:
    """follow yields what another writer records, each once, in order."""
    reader, writer = opener(), opener()
    try:
        gate(writer, 0)
        seen: list[int] = []
        done = threading.Event()

        def follow() -> None:
            for d in reader.follow(after_seq=0, stop=done.is_set):
                seen.append(d.seq)
                if len(seen) == 20:
                    done.set()

        t = threading.Thread(target=follow)
        t.start()
        for i in range(20):
            gate(writer, i)
        t.join(30)
        done.set()
        assert seen == list(range(1, 21))
    finally:
        reader.close()
        writer.close()


def test_the_jetstream_store_signs_checkpoints_that_verify(
    shared_nats_server: NatsServer, tmp_path: Path
) -> None:
    """A diskless writer's checkpoints verify from the stream, and a new writer continues its
    history."""
    pytest.importorskip("nats")
    from reasoning_trace.jetstream_store import JetStreamStore
    from reasoning_trace.note import Signer
    from reasoning_trace.verify_replica import verify_node

    signer = Signer.generate("reasoning-trace/stateless")
    store = JetStreamStore(
        shared_nats_server.url, "stateless", key=signer, stream="CONTRACT", checkpoint_every=64
    )
    with DecisionLog(store=store) as log:
        for i in range(200):
            gate(log, i)
    # Reopened (a new container): it continues the same history from the stream alone.
    with DecisionLog(
        store=JetStreamStore(shared_nats_server.url, "stateless", key=signer, stream="CONTRACT")
    ) as log:
        assert gate(log, 200).seq == 200  # type: ignore[attr-defined]
    report = verify_node(
        shared_nats_server.url,
        "stateless",
        str(signer.verifier),
        stream="CONTRACT",
        allow_open_server=True,
    )
    assert report.ok, report.failures
    assert report.records == 201 and report.signed_size == 201
    assert report.checkpoints >= 4  # 64, 128, 192, 200 and the last close


def test_the_jetstream_store_rides_out_a_server_restart(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """Decisions recorded while the server is killed and restarted are all stored once, in
    seq order, and the node's replicated history still verifies."""
    pytest.importorskip("nats")
    from reasoning_trace.fleet import Fleet
    from reasoning_trace.jetstream import decision_subject
    from reasoning_trace.jetstream_store import JetStreamStore
    from reasoning_trace.note import Signer
    from reasoning_trace.verify_replica import verify_node

    signer = Signer.generate("reasoning-trace/restart")
    log = DecisionLog(store=JetStreamStore(nats_server.url, "restart", key=signer))
    made: list[object] = []
    errors: list[BaseException] = []
    go_on = threading.Event()
    go_on.set()

    def write() -> None:
        i = 0
        while go_on.is_set():
            try:
                made.append(gate(log, i))
            except StorageError as exc:  # only if the outage outlasted the ack deadline
                errors.append(exc)
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        deadline = time.monotonic() + 30
        while len(made) < 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        nats_server.kill()
        before = len(made)
        nats_server.start()
        deadline = time.monotonic() + 60
        while len(made) < before + 200:  # writing resumed after the restart
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        go_on.clear()
        writer.join(60)
        log.close()
    assert not errors
    with Fleet(nats_server.url) as fleet:
        stored = [m.data for m in fleet.messages(decision_subject("restart"))]
    assert stored == [d.line for d in made]  # type: ignore[attr-defined]
    report = verify_node(nats_server.url, "restart", str(signer.verifier), allow_open_server=True)
    assert report.ok, report.failures
    assert report.signed_size == len(stored)
