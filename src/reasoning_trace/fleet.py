"""The fleet: every node's replicated log, read from the JetStream stream.

``Fleet`` offers the reading half of ``DecisionLog`` (``recent``, ``follow``, ``query``,
``stats``) over all nodes at once, interleaved in time, so ``rtrace --source nats://…`` runs
the same commands across a fleet. It is a ``StreamReader`` (``stream_reader.py``: how a
subject's messages are read, and foreign messages skipped and reported) that knows the
fleet's nodes and their time. Checking a node's replica is ``verify_replica.py``.

Reads are narrowed before anything is fetched: ``node`` by subject, a time range by a binary
search on each node's records (a node's timestamps never run backwards), ``tail`` by a binary
search on seqs; nodes are merged in time order with a bounded buffer per node, so memory
stays flat whatever the stream's size. ``query`` and ``stats`` may answer from the fleet
index in the user's cache (``fleet_index.py``).
Tests: ``tests/test_fleet.py``, ``tests/test_fleet_hostile.py``, ``tests/test_fleet_index.py``.
"""

from __future__ import annotations

import heapq
import itertools
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from .errors import CorruptLine
from .jetstream import DEFAULT_STREAM, check_node, decision_subject, node_of
from .query import Filter, Stats, check_limit
from .record import Decision
from .stream_messages import last_record
from .stream_reader import BATCH, StreamReader

if TYPE_CHECKING:
    from .fleet_index import FleetIndex

__all__ = ["Fleet"]


class Fleet(StreamReader):
    """Read access to every node's replicated records in ``stream`` on the server at ``url``.

    ``hold`` is how long ``follow`` keeps a record back so that records of several nodes
    arriving close together are printed in time order. ``on_foreign(subject, stream_seq,
    why)`` hears of each message skipped because it is not a record of its subject's node
    (default: a logged warning). ``index``: answer ``query`` and ``stats`` from the fleet
    index in the user's cache (``fleet_index.py``; a path: that file), caught up first.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str = DEFAULT_STREAM,
        hold: float = 0.2,
        create: bool = False,
        replicas: int = 1,
        on_foreign: Callable[[str, int, str], None] | None = None,
        index: bool | str | os.PathLike[str] = False,
    ) -> None:
        super().__init__(
            url, stream=stream, create=create, replicas=replicas, on_foreign=on_foreign
        )
        self.hold = hold
        self.root = self.shown_url  # where the records come from, as DecisionLog.root says
        self._end = 0  # the stream's last seq when the newest read began (0: none yet)
        self._index: FleetIndex | None = None
        if index:
            from .fleet_index import FleetIndex

            self._index = FleetIndex(self, None if index is True else index)

    def nodes(self) -> list[str]:
        """The nodes that replicated at least one record, sorted."""
        return sorted(node_of(s) for s in self.subjects(decision_subject("*")))

    def has_replica(self, node: str) -> bool:
        """Whether ``node`` replicated anything (records, checkpoints or keys) here."""
        return bool(self.subjects(f"rtrace.{check_node(node)}.*"))

    def decisions(
        self, node: str | None = None, *, since_us: int | None = None, until_us: int | None = None
    ) -> Iterator[Decision]:
        """Every replicated decision (of ``node``, or of all nodes, merged in time order),
        with ``since_us <= timestamp < until_us`` if given; only that range is fetched."""
        nodes = [check_node(node)] if node is not None else self.nodes()
        streams = [self._node_decisions(n, since_us, until_us) for n in nodes]
        if len(streams) == 1:
            return streams[0]
        return heapq.merge(*streams, key=_when)

    def _node_decisions(
        self, node: str, since_us: int | None, until_us: int | None
    ) -> Iterator[Decision]:
        subject = decision_subject(node)
        start = 1
        if since_us is not None:
            found = self._first_where(subject, lambda d: _us(d) >= since_us)
            if found is None:
                return
            start = found
        for d in self.records(subject, start):
            if until_us is not None and _us(d) >= until_us:
                return  # a node's timestamps never run backwards: nothing later matches
            yield d

    def __len__(self) -> int:
        return sum(self.subjects(decision_subject("*")).values())

    def _mark(self) -> None:
        """Note where the stream ends now: a later ``follow`` starts there, skipping what
        reads since returned."""
        self._end = self.info().state.last_seq or 0

    def _record_from(self, subject: str, seq: int) -> tuple[int, Decision] | None:
        """(stream seq, record) of the first record on ``subject`` at stream seq ``seq`` or
        after, foreign messages stepped over (``None``: there is none)."""
        while True:
            msg = self.message_from(subject, seq)
            if msg is None:
                return None
            d = self.record(subject, msg.seq or 0, msg.data or b"", msg.headers)
            if d is not None:
                return msg.seq or 0, d
            seq = (msg.seq or seq) + 1

    def _first_where(self, subject: str, pred: Callable[[Decision], bool]) -> int | None:
        """The stream seq of the first record on ``subject`` for which ``pred`` holds (it
        must then hold for every later record), or ``None``: a binary search with "next
        message on the subject" requests, so O(log stream) messages are read, not the stream."""
        last = self.last_message(subject)
        if last is None:
            return None
        lo, hi = 1, (last.seq or 0) + 1  # past the last message: no record, so "true"
        while lo < hi:
            mid = (lo + hi) // 2
            found = self._record_from(subject, mid)
            if found is None or pred(found[1]):
                hi = mid
            else:
                lo = found[0] + 1  # no record in [mid, found] holds
        found = self._record_from(subject, lo)
        return found[0] if found is not None and pred(found[1]) else None

    def _last_record(self, subject: str) -> Decision | None:
        """The newest record on ``subject``; foreign messages after it are reported."""
        last, record = self.bridge.run(last_record(self.js, self.stream, node_of(subject)))
        if last is not None and last is not record:
            seq = (record.seq or 0) + 1 if record is not None else 1
            while msg := self.message_from(subject, seq):
                self.record(subject, msg.seq or 0, msg.data or b"", msg.headers)
                seq = (msg.seq or seq) + 1
        if record is None:
            return None
        return self.record(subject, record.seq or 0, record.data or b"", record.headers)

    def _start_of_last(self, subject: str, n: int) -> int | None:
        """The stream seq from which ``subject`` holds its last ``n`` records (``None``: it
        holds none, or ``n`` is 0)."""
        newest = self._last_record(subject)
        if newest is None or n <= 0:
            return None
        target = newest.seq - n + 1
        return self._first_where(subject, lambda d: d.seq >= target)

    def recent(
        self,
        limit: int = 200,
        on_corrupt: Callable[[CorruptLine], None] | None = None,
        *,
        node: str | None = None,
    ) -> list[Decision]:
        """The newest ``limit`` decisions across nodes (or of ``node``), oldest first, by
        time (each node's last ``limit`` are read, then merged). Foreign messages are
        skipped and reported (``on_foreign``); ``on_corrupt`` is kept for ``DecisionLog``'s
        signature. A ``limit`` below 0 raises ``QueryError``."""
        check_limit(limit)
        self._mark()
        found: list[Decision] = []
        subjects = (
            [decision_subject(check_node(node))]
            if node is not None
            else sorted(self.subjects(decision_subject("*")))
        )
        for subject in subjects:
            start = self._start_of_last(subject, limit)
            if start is None:
                continue
            found.extend(self.records(subject, start))
        found.sort(key=_when)
        return found[max(0, len(found) - limit) :] if limit > 0 else []

    def follow(
        self,
        after_seq: int | None = None,
        *,
        stop: Callable[[], bool] | None = None,
        node: str | None = None,
    ) -> Iterator[Decision]:
        """Every node's (or ``node``'s) new decisions, interleaved in time, from the end of
        the last read (``after_seq`` is per node and so not used across a fleet). Foreign
        messages are skipped and reported; they never end the follow."""
        stopped = stop or (lambda: False)
        if self._end == 0:
            self._mark()
        # Held back ``hold`` seconds after arrival, released oldest timestamp first: records of
        # several nodes that arrive close together come out in time order.
        held: list[tuple[float, int, float, Decision]] = []  # (timestamp, tiebreak, arrival, d)
        counter = itertools.count()
        subject = decision_subject(check_node(node) if node is not None else "*")
        for msg in self.follow_messages(subject, self._end + 1, self.hold, stopped):
            now = time.monotonic()
            if msg is not None:
                sseq = msg.metadata.sequence.stream
                if sseq <= self.delivered.get(msg.subject, 0):
                    continue  # a read already returned it
                d = self.record(msg.subject, sseq, msg.data, msg.headers)
                if d is not None:
                    heapq.heappush(held, (d.timestamp, next(counter), now, d))
            while held and (msg is None or held[0][2] + self.hold <= now or len(held) > BATCH):
                yield heapq.heappop(held)[3]

    def select(self, flt: Filter) -> Iterator[Decision]:
        """The decisions ``flt`` matches, in time order; only its node and time range are
        fetched."""
        found = self.decisions(flt.node, since_us=flt.since_us, until_us=flt.until_us)
        return filter(flt.matches, found)

    def query(
        self, flt: Filter, *, limit: int | None = None, newest_first: bool = False
    ) -> list[Decision]:
        """The decisions ``flt`` matches across nodes, in time order (``newest_first``:
        reversed); at most ``limit``, holding no more than ``limit`` in memory."""
        if self._index is not None:
            return self._index.query(flt, limit=limit, newest_first=newest_first)
        if limit is None:
            found = list(self.select(flt))
            if newest_first:
                found.reverse()
            return found
        if newest_first:
            return heapq.nlargest(limit, self.select(flt), key=_when)
        return list(itertools.islice(self.select(flt), limit))

    def query_lines(
        self, flt: Filter, *, limit: int | None = None, newest_first: bool = False
    ) -> list[bytes]:
        """The stored lines ``query`` would return."""
        if self._index is not None:
            found = self._index.lines(flt, limit=limit, newest_first=newest_first)
            return [line for line, _ in found]
        return [d.line for d in self.query(flt, limit=limit, newest_first=newest_first)]

    def iter_lines(self, flt: Filter) -> Iterator[bytes]:
        """The stored lines ``flt`` matches, in time order, streamed (flat memory)."""
        if self._index is not None:
            return (line for line, _ in self._index.lines(flt))
        return (d.line for d in self.select(flt))

    def stats(self, flt: Filter | None = None) -> Stats:
        """Approval rate per action, vetoes per voter, decisions per day and per node,
        fleet-wide: by the index, or in one streaming pass over the stream."""
        if self._index is not None:
            return self._index.stats(flt or Filter())
        return Stats.of(self.select(flt or Filter()))

    def close(self) -> None:
        """Disconnect (and close the index)."""
        if self._index is not None:
            self._index.close()
        super().close()


def _when(d: Decision) -> float:
    return d.timestamp


def _us(d: Decision) -> int:
    return round(d.timestamp * 1_000_000)
