"""What the JetStream store guarantees beyond the contract every store keeps
(``tests/test_store_contract.py``), on a real nats-server: a record the stream acknowledged
survives a restart of the store and of the server; stores writing as one node never hand out
one seq twice; a batch cut short by an outage keeps a prefix with consecutive seqs and
consumes no seq for the rest; a closed store refuses to append."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("nats")

from reasoning_trace import Decision, StorageError
from reasoning_trace.jetstream import decision_subject
from reasoning_trace.jetstream_store import JetStreamStore
from reasoning_trace.note import Signer
from reasoning_trace.record import Pending, parse_record, prepare
from reasoning_trace.store import AppendResult
from reasoning_trace.stream_reader import StreamReader

from .natsserver import NatsServer


def pending(i: int) -> Pending:
    """A decision numbered ``i``, ready to append."""
    return prepare("upgrade", i % 3 != 0, {"safety": {"passed": i % 3 != 0}}, {"i": i})


def decisions(results: list[AppendResult]) -> list[Decision]:
    """The results of an append, each asserted to be a stored decision."""
    assert all(isinstance(r, Decision) for r in results), results
    return [r for r in results if isinstance(r, Decision)]


def in_stream(url: str, node: str) -> list[bytes]:
    """Every message on ``node``'s decision subject, in stream order."""
    with StreamReader(url) as reader:
        return [m.data for m in reader.messages(decision_subject(node))]


@pytest.fixture
def signer() -> Signer:
    """A signing key of its own for each test."""
    return Signer.generate("reasoning-trace/store-test")


@pytest.fixture
def stores() -> Iterator[list[JetStreamStore]]:
    """Stores a test opens, closed after it."""
    opened: list[JetStreamStore] = []
    yield opened
    for store in opened:
        store.close()


def test_acknowledged_records_survive_a_store_and_a_server_restart(
    nats_server: NatsServer, signer: Signer, stores: list[JetStreamStore]
) -> None:
    """Records whose append returned are found by a new store after the old one was dropped
    unclosed and the server was killed (SIGKILL) and started again, by seq and by id, and
    the new store continues at the next seq."""
    first = JetStreamStore(nats_server.url, "durable", key=signer)
    stores.append(first)
    stored = decisions(first.append([pending(i) for i in range(40)]))
    stored += decisions(first.append([pending(40)]))
    assert [d.seq for d in stored] == list(range(41))

    nats_server.kill()
    nats_server.start()
    again = JetStreamStore(nats_server.url, "durable", key=signer)
    stores.append(again)
    assert again.size() == 41
    assert [d.line for d in again.read()] == [d.line for d in stored]
    assert again.get(stored[17].id).line == stored[17].line
    assert again.get(40).line == stored[40].line
    assert decisions(again.append([pending(41)]))[0].seq == 41
    assert in_stream(nats_server.url, "durable") == [d.line for d in again.read()]


def test_stores_writing_as_one_node_never_hand_out_one_seq_twice(
    nats_server: NatsServer, signer: Signer, stores: list[JetStreamStore]
) -> None:
    """A store that has not seen another's record is refused by the expected last sequence
    and takes the next seq; two stores appending at once from two threads store every
    record once, with the seqs 0..n-1 between them."""
    a = JetStreamStore(nats_server.url, "shared", key=signer)
    b = JetStreamStore(nats_server.url, "shared", key=signer)
    stores.extend([a, b])
    assert decisions(a.append([pending(0)]))[0].seq == 0
    assert decisions(b.append([pending(1)]))[0].seq == 1  # b expected the subject empty
    assert decisions(a.append([pending(2), pending(3)]))[1].seq == 3

    made: dict[str, list[Decision]] = {"a": [], "b": []}

    def write(name: str, store: JetStreamStore, base: int) -> None:
        """Append 60 records, in batches of 1 to 4."""
        for size in [1, 2, 3, 4] * 6:
            i = base + len(made[name])
            made[name] += decisions(store.append([pending(i + k) for k in range(size)]))

    threads = [
        threading.Thread(target=write, args=("a", a, 100)),
        threading.Thread(target=write, args=("b", b, 200)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(made["a"]) == len(made["b"]) == 60
    seqs = [d.seq for d in made["a"] + made["b"]]
    assert sorted(seqs) == list(range(4, 124))  # none twice, none skipped
    for name in made:  # each store's own records in the order it appended them
        mine = [d.seq for d in made[name]]
        assert mine == sorted(mine)

    lines = in_stream(nats_server.url, "shared")
    assert [parse_record(line).seq for line in lines] == list(range(124))
    by_seq = {d.seq: d.line for d in made["a"] + made["b"]}
    assert all(lines[seq] == line for seq, line in by_seq.items())


def test_a_batch_cut_short_by_an_outage_keeps_a_prefix_and_consumes_no_seq(
    nats_server: NatsServer, signer: Signer, stores: list[JetStreamStore]
) -> None:
    """The server is killed as the sixth record of a batch of ten is timed: the first five
    stay stored with seqs 0..4, the other five get a StorageError, and after the server is
    back the next record stored is seq 5."""
    timed = 0

    def clock() -> int:
        """The store's clock, which kills the server when the sixth record is timed."""
        nonlocal timed
        timed += 1
        if timed == 6:
            nats_server.kill()
        return time.time_ns()

    cut = JetStreamStore(
        nats_server.url, "cut", key=signer, clock=clock, ack_timeout=0.5, ack_deadline=1.0
    )
    results = cut.append([pending(i) for i in range(10)])
    assert [r.seq for r in decisions(results[:5])] == [0, 1, 2, 3, 4]
    assert all(isinstance(r, StorageError) for r in results[5:]), results[5:]
    # Closing drops the unconfirmed publish the connection still buffers, so it is never sent
    # once the server is back. (With the server away, nats-py's close raises from its last
    # drain into the dead socket; the connection is closed all the same.)
    with contextlib.suppress(ConnectionResetError):
        cut.close()

    nats_server.start()
    assert in_stream(nats_server.url, "cut") == [r.line for r in decisions(results[:5])]
    after = JetStreamStore(nats_server.url, "cut", key=signer)
    stores.append(after)
    assert after.size() == 5
    assert decisions(after.append([pending(10)]))[0].seq == 5


def test_a_closed_store_refuses_to_append(
    nats_server: NatsServer, signer: Signer, stores: list[JetStreamStore]
) -> None:
    """After ``close``, ``append`` raises StorageError and nothing more reaches the stream;
    closing again does nothing."""
    store = JetStreamStore(nats_server.url, "closed", key=signer)
    first = decisions(store.append([pending(0)]))
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.append([pending(1)])
    store.close()
    assert in_stream(nats_server.url, "closed") == [first[0].line]
