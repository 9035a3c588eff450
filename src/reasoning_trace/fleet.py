"""The fleet: every node's replicated log, read from the JetStream stream.

``Fleet`` offers the reading half of ``DecisionLog`` (``recent``, ``follow``, ``query``,
``stats``) over all nodes at once, interleaved in time, so ``rtrace --source nats://…`` runs
the same commands across a fleet. ``verify_node`` checks one node's replicated records
against its replicated signed checkpoints from the stream alone; ``witness`` checks a local
log against what was replicated, so a rewrite after replication is found even when the
rewriter re-signed the local checkpoints with the node's own key.

Anyone allowed to publish on a node's subject can put a message there that is not one of its
records (``{"seq":999999}``, ``hello``). Readers skip such a foreign message and report it
(subject and stream seq), as local readers report a corrupt line; ``verify_node`` reports it
as a finding. Reads are narrowed before anything is fetched: ``node`` by subject, a time range
by a binary search on each node's records (a node's timestamps never run backwards), ``tail``
by a binary search on seqs; nodes are merged in time order with a bounded buffer per node, so
memory stays flat whatever the stream's size.
Tests: ``tests/test_fleet.py``, ``tests/test_fleet_hostile.py``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import Checkpoint, open_checkpoint
from .errors import CorruptLine, NoteError, NotFound, ReplicationError, SignatureError, UnknownKey
from .jetstream import (
    DEFAULT_STREAM,
    Bridge,
    Problems,
    check_node,
    checkpoint_of,
    checkpoint_subject,
    connect,
    decision_subject,
    ensure_stream,
    expiry_risks,
    key_subject,
    last_message,
    last_record,
    message_from,
    node_of,
    parse_servers,
    redact_url,
    server_is_open,
)
from .layout import resolve_root
from .note import Verifier, as_verifiers
from .query import Filter, Stats
from .record import Decision, parse_record
from .report import Finding, Report
from .tree import CompactRange, leaf_hash

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.api import RawStreamMsg
    from nats.js.client import JetStreamContext

    from .fleet_index import FleetIndex

__all__ = ["Fleet", "verify_node", "witness"]

logger = logging.getLogger("reasoning_trace")

BATCH = 1024
STALL = 60.0  # seconds a read may get nothing before it fails (elections take a few)


class _Inbox:
    """Messages a subscription delivered, waiting to be taken in batches (on the loop).

    Holds at most ``limit``: a full inbox makes the delivery callback wait, which holds back
    the consumer's flow control, so a slow reader slows the server instead of filling memory.
    """

    def __init__(self, limit: int = 4 * BATCH) -> None:
        self.msgs: deque[Msg] = deque()
        self.limit = limit
        self.ready = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.sub: Any = None

    async def put(self, msg: Msg) -> None:
        while len(self.msgs) >= self.limit:
            self.room.clear()
            await self.room.wait()
        self.msgs.append(msg)
        self.ready.set()

    async def take(self, timeout: float) -> list[Msg]:
        if not self.msgs:
            self.ready.clear()
            try:
                await asyncio.wait_for(self.ready.wait(), timeout)
            except TimeoutError:
                return []
        out = list(self.msgs)
        self.msgs.clear()
        self.room.set()
        return out

    async def close(self) -> None:
        self.room.set()
        if self.sub is not None:
            await self.sub.unsubscribe()


class Fleet:
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
        from nats.js.errors import NotFoundError

        self.url = url
        self.shown_url = redact_url(url)
        self.stream = stream
        self.hold = hold
        self.root = self.shown_url  # where the records come from, as DecisionLog.root says
        self.on_foreign = on_foreign or _log_foreign
        self.foreign: set[tuple[str, int]] = set()  # (subject, stream seq) skipped so far
        parse_servers(url)  # a bad URL is a ValueError before any thread starts
        self._bridge = Bridge()
        try:
            self._problems = Problems()
            self._nc = self._bridge.run(connect(url, name="rtrace-fleet", problems=self._problems))
            self.open_server = server_is_open(self._nc)
            self._js = self._nc.jetstream(timeout=5)
            try:
                if create:
                    self._bridge.run(ensure_stream(self._js, stream, replicas=replicas))
                else:
                    self._bridge.run(self._js.stream_info(stream))
            except NotFoundError:
                raise ReplicationError(
                    f"there is no stream {stream!r} at {self.shown_url}: nothing was "
                    "replicated there"
                ) from None
        except BaseException:
            if hasattr(self, "_nc"):
                self._bridge.run(self._nc.close())
            self._bridge.close()
            raise
        self._end = 0  # the stream's last seq when the newest read began (0: none yet)
        self._delivered: dict[str, int] = {}  # subject -> newest stream seq a read returned
        self._index: FleetIndex | None = None
        if index:
            from .fleet_index import FleetIndex

            self._index = FleetIndex(self, None if index is True else index)

    @property
    def bridge(self) -> Bridge:
        """The event loop this fleet's connection runs on."""
        return self._bridge

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context of this fleet's connection."""
        return self._js

    # --- raw reading ---------------------------------------------------------------------------

    def subjects(self, pattern: str) -> dict[str, int]:
        """The subjects matching ``pattern`` with their message counts."""
        info = self._bridge.run(self._js.stream_info(self.stream, subjects_filter=pattern))
        return dict(info.state.subjects or {})

    def nodes(self) -> list[str]:
        """The nodes that replicated at least one record, sorted."""
        return sorted(node_of(s) for s in self.subjects(decision_subject("*")))

    def has_replica(self, node: str) -> bool:
        """Whether ``node`` replicated anything (records, checkpoints or keys) here."""
        return bool(self.subjects(f"rtrace.{check_node(node)}.*"))

    def messages(self, subject: str, *, start: int = 1) -> Iterator[Msg]:
        """The stream's messages on ``subject`` from stream seq ``start`` up to the last one
        there now, in stream order. Read by an ephemeral push consumer that may have at
        most ``4 * BATCH`` messages unacknowledged, each taken batch acknowledged at once
        by its last message (ack-all): memory stays flat whatever the stream's size."""
        last = self._bridge.run(last_message(self._js, self.stream, subject))
        if last is None or (last.seq or 0) < start:
            return
        end = last.seq or 0
        inbox = self._bridge.run(self._subscribe(subject, start, bounded=True))
        newest = start - 1
        quiet_since = time.monotonic()
        try:
            while True:
                batch = self._bridge.run(inbox.take(1.0))
                if not batch:
                    self._stalled(subject, newest, end, quiet_since)
                    continue
                quiet_since = time.monotonic()
                self._bridge.run(batch[-1].ack())
                for msg in batch:
                    seq = msg.metadata.sequence.stream
                    if seq <= newest:
                        continue  # redelivered: already yielded
                    newest = seq
                    if seq > self._delivered.get(msg.subject, 0):
                        self._delivered[msg.subject] = seq
                    yield msg
                    if seq >= end:
                        return
        finally:
            self._bridge.run(inbox.close())

    def _stalled(self, subject: str, newest: int, end: int, quiet_since: float) -> None:
        """A read that gets nothing although the stream holds more: refused acks (the
        user's permissions) fail at once; anything else after ``STALL`` seconds."""
        refused = [s for s in self._problems.denied if s.startswith("$JS.ACK.")]
        if refused or time.monotonic() - quiet_since > STALL:
            why = (
                f"this user may not acknowledge what it reads (publish on {refused[-1]} is "
                "denied; allow $JS.ACK.<stream>.>)"
                if refused
                else f"nothing arrived for {STALL:g} s"
            )
            raise ReplicationError(
                f"reading {subject} from stream {self.stream!r} at {self.shown_url} stopped "
                f"at message {newest} of {end}: {why}"
            )

    def _batches(self, subject: str, start: int, wait: float) -> Generator[list[Msg], None, None]:
        """Batches of ``subject``'s messages from stream seq ``start`` as they arrive, an
        empty one after each ``wait`` seconds without any; the consumer ends with the loop."""
        inbox = self._bridge.run(self._subscribe(subject, start))
        try:
            while True:
                yield self._bridge.run(inbox.take(wait))
        finally:
            self._bridge.run(inbox.close())

    async def _subscribe(self, subject: str, start: int, *, bounded: bool = False) -> _Inbox:
        """A consumer of ``subject`` from stream seq ``start``, delivering into an inbox by
        callback (three times the rate of awaiting each message): ordered (for following),
        or ``bounded``: at most ``4 * BATCH`` unacknowledged, acknowledged all at once."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        inbox = _Inbox()
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, start)
        )
        if bounded:
            config.ack_policy = AckPolicy.ALL
            config.max_ack_pending = 4 * BATCH
            config.ack_wait = 300.0
            config.inactive_threshold = 60.0
            inbox.sub = await self._js.subscribe(
                subject, stream=self.stream, config=config, cb=inbox.put, manual_ack=True
            )
            return inbox
        inbox.sub = await self._js.subscribe(
            subject, stream=self.stream, ordered_consumer=True, config=config, cb=inbox.put
        )
        return inbox

    @staticmethod
    def decision(msg: Msg) -> Decision:
        """The record a decision message holds, with its node (from the subject) if unset;
        ``CorruptLine`` when it is not a record of that node."""
        where = f"{msg.subject}#{msg.metadata.sequence.stream}"
        node = node_of(msg.subject)
        d = parse_record(msg.data, file=where)
        if d.node is None:
            return d._replace(node=node)
        if d.node != node:
            raise CorruptLine(where, 0, f"a record of node {d.node!r} on {node!r}'s subject")
        return d

    def _record(self, subject: str, sseq: int, data: bytes) -> Decision | None:
        """The record a message holds, or ``None`` after reporting it as foreign."""
        node = node_of(subject)
        try:
            d = parse_record(data, file=f"{subject}#{sseq}")
        except CorruptLine as exc:
            self._foreign(subject, sseq, exc.args[0] if exc.args else str(exc))
            return None
        if d.node is None:
            return d._replace(node=node)
        if d.node != node:
            self._foreign(subject, sseq, f"a record of node {d.node!r} on {node!r}'s subject")
            return None
        return d

    def _foreign(self, subject: str, sseq: int, why: str) -> None:
        if (subject, sseq) not in self.foreign:
            self.foreign.add((subject, sseq))
            self.on_foreign(subject, sseq, why)

    def _records(self, subject: str, start: int = 1) -> Iterator[Decision]:
        """The records on one node's decision subject from stream seq ``start``, in order,
        foreign messages skipped and reported."""
        for msg in self.messages(subject, start=start):
            d = self._record(msg.subject, msg.metadata.sequence.stream, msg.data)
            if d is not None:
                yield d

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
        for d in self._records(subject, start):
            if until_us is not None and _us(d) >= until_us:
                return  # a node's timestamps never run backwards: nothing later matches
            yield d

    def __len__(self) -> int:
        return sum(self.subjects(decision_subject("*")).values())

    def _mark(self) -> None:
        """Note where the stream ends now: a later ``follow`` starts there, skipping what
        reads since returned."""
        info = self._bridge.run(self._js.stream_info(self.stream))
        self._end = info.state.last_seq or 0

    def _record_from(self, subject: str, seq: int) -> tuple[int, Decision] | None:
        """(stream seq, record) of the first record on ``subject`` at stream seq ``seq`` or
        after, foreign messages stepped over (``None``: there is none)."""
        while True:
            msg = self._bridge.run(message_from(self._js, self.stream, subject, seq))
            if msg is None:
                return None
            d = self._record(subject, msg.seq or 0, msg.data or b"")
            if d is not None:
                return msg.seq or 0, d
            seq = (msg.seq or seq) + 1

    def _first_where(self, subject: str, pred: Callable[[Decision], bool]) -> int | None:
        """The stream seq of the first record on ``subject`` for which ``pred`` holds (it
        must then hold for every later record), or ``None``: a binary search with "next
        message on the subject" requests, so O(log stream) messages are read, not the stream."""
        last = self._bridge.run(last_message(self._js, self.stream, subject))
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
        node = node_of(subject)

        async def find() -> tuple[RawStreamMsg | None, RawStreamMsg | None]:
            return await last_record(self._js, self.stream, node)

        last, record = self._bridge.run(find())
        if last is not None and last is not record:
            seq = (record.seq or 0) + 1 if record is not None else 1
            while msg := self._bridge.run(message_from(self._js, self.stream, subject, seq)):
                self._record(subject, msg.seq or 0, msg.data or b"")
                seq = (msg.seq or seq) + 1
        if record is None:
            return None
        return self._record(subject, record.seq or 0, record.data or b"")

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
        signature."""
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
            found.extend(self._records(subject, start))
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
        for msg in self._follow_messages(subject, stopped):
            now = time.monotonic()
            if msg is not None:
                sseq = msg.metadata.sequence.stream
                if sseq <= self._delivered.get(msg.subject, 0):
                    continue  # a read already returned it
                d = self._record(msg.subject, sseq, msg.data)
                if d is not None:
                    heapq.heappush(held, (d.timestamp, next(counter), now, d))
            while held and (msg is None or held[0][2] + self.hold <= now or len(held) > BATCH):
                yield heapq.heappop(held)[3]

    def _follow_messages(self, subject: str, stop: Callable[[], bool]) -> Iterator[Msg | None]:
        """Messages as they come; ``None`` after each quiet spell, to release held records."""
        with closing(self._batches(subject, self._end + 1, self.hold)) as batches:
            for batch in batches:
                if stop():
                    return
                yield from batch
                if not batch:
                    yield None

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
        if not self._bridge.loop.is_closed():
            self._bridge.run(self._nc.close())
            self._bridge.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- integrity -----------------------------------------------------------------------------

    def stream_risks(self) -> list[str]:
        """What in the stream's configuration would let history expire (empty: nothing)."""
        info = self._bridge.run(self._js.stream_info(self.stream))
        return expiry_risks(info.config)

    def published_keys(self, node: str) -> list[Verifier]:
        """The verifier keys ``node`` replicated (its newest key message)."""
        msg = self._bridge.run(last_message(self._js, self.stream, key_subject(node)))
        if msg is None:
            return []
        return _parse_keys(msg.data or b"")

    def key_history(self, node: str, report: Report) -> list[tuple[int, list[Verifier]]]:
        """Every key message ``node``'s key subject holds: (stream seq, keys), in order. A
        message that is not a list of verifier keys is a ``foreign_message`` finding."""
        history = []
        for msg in self.messages(key_subject(node)):
            sseq = msg.metadata.sequence.stream
            try:
                history.append((sseq, _parse_keys(msg.data or b"")))
            except (ValueError, UnicodeDecodeError) as exc:
                where = f"{msg.subject}#{sseq}"
                report.add(
                    Finding("foreign_message", f"{where}: not verifier keys ({exc})", file=where)
                )
        return history

    def checkpoints(
        self, node: str, verifiers: list[Verifier], report: Report
    ) -> dict[int, tuple[bytes, int]]:
        """``node``'s replicated checkpoints that verify, by size: (root, stream seq).
        Bad signatures, unknown keys, malformed notes and forks become findings."""
        signed: dict[int, tuple[bytes, int]] = {}
        for msg in self.messages(checkpoint_subject(node)):
            where = f"{msg.subject}#{msg.metadata.sequence.stream}"
            note = (msg.data or b"").decode(errors="replace")
            try:
                checkpoint_of(msg.data or b"")
            except (ValueError, UnicodeDecodeError) as exc:
                report.add(
                    Finding("foreign_message", f"{where}: not a checkpoint ({exc})", file=where)
                )
                continue
            try:
                ck: Checkpoint = open_checkpoint(note, verifiers)
            except UnknownKey as exc:
                report.add(Finding("unknown_key", f"{where}: {exc}", file=where))
                continue
            except SignatureError as exc:
                report.add(Finding("bad_signature", f"{where}: {exc}", file=where))
                continue
            except NoteError as exc:
                report.add(Finding("bad_checkpoint", f"{where}: {exc}", file=where))
                continue
            seen = signed.get(ck.size)
            if seen is not None and seen[0] != ck.root:
                report.add(
                    Finding(
                        "fork",
                        f"{where}: two signed checkpoints of size {ck.size} with different roots",
                        file=where,
                    )
                )
                continue
            signed[ck.size] = (ck.root, msg.metadata.sequence.stream)
        return signed


def _own_records(fleet: Fleet, node: str, report: Report) -> Iterator[Msg]:
    """The messages on ``node``'s decision subject that are its records; each foreign one
    becomes a finding."""
    for msg in fleet.messages(decision_subject(node)):
        try:
            Fleet.decision(msg)
        except CorruptLine as exc:
            where = f"{msg.subject}#{msg.metadata.sequence.stream}"
            why = exc.args[0] if exc.args else exc
            report.add(
                Finding("foreign_message", f"{where}: not a record of {node} ({why})", file=where)
            )
            continue
        yield msg


def _quiet(subject: str, sseq: int, why: str) -> None:
    """Foreign messages are findings in a report, not warnings."""


def _when(d: Decision) -> float:
    return d.timestamp


def _us(d: Decision) -> int:
    return round(d.timestamp * 1_000_000)


def _log_foreign(subject: str, sseq: int, why: str) -> None:
    logger.warning(
        "reasoning_trace: skipped stream message %d on %s: not a record of its node (%s)",
        sseq,
        subject,
        why,
    )


def _parse_keys(data: bytes) -> list[Verifier]:
    keys = [Verifier.parse(v) for v in data.decode().splitlines() if v.strip()]
    if not keys:
        raise ValueError("no key in it")
    return keys


def _keys(
    fleet: Fleet,
    node: str,
    vkey: str | Verifier | Iterable[str | Verifier] | None,
    trust_stream_keys: bool,
    report: Report,
) -> list[Verifier]:
    """The keys to check ``node``'s checkpoints with: the caller's; or, only when asked to
    trust them, every key the node published. A key subject whose keys changed is a finding:
    a failure when the stream's keys are trusted (whoever changed them may have signed what
    follows), a note otherwise."""
    verifiers = as_verifiers(vkey)
    if verifiers is None and not trust_stream_keys:
        raise ValueError(
            f"give the verifier key of {node} you hold (--vkey): keys read from the stream "
            "are whatever was published there (or say --trust-stream-keys)"
        )
    history = fleet.key_history(node, report)
    kind = "key_changed" if verifiers is None else "key_change_seen"
    for (_, before), (sseq, after) in itertools.pairwise(history):
        if {str(v) for v in before} != {str(v) for v in after}:
            where = f"{key_subject(node)}#{sseq}"
            added = sorted({str(v) for v in after} - {str(v) for v in before})
            report.add(
                Finding(
                    kind,
                    f"{where}: the verifier keys {node} publishes changed"
                    + (f" (new: {', '.join(added)})" if added else " (keys withdrawn)"),
                    file=where,
                )
            )
    if verifiers is None:
        seen: dict[str, Verifier] = {}
        for _, keys in history:
            for v in keys:
                seen.setdefault(str(v), v)
        verifiers = list(seen.values())
        if verifiers:
            report.add(
                Finding(
                    "key_from_stream",
                    f"checked with the keys {node} replicated ({verifiers[0].name}), trusted "
                    "as asked; give --vkey to check with a key you hold",
                )
            )
    return verifiers


def _server_findings(fleet: Fleet, report: Report, allow_open_server: bool) -> None:
    """What about the server and stream could let replicated history go."""
    for risk in fleet.stream_risks():
        report.add(Finding("expiring_stream", f"stream {fleet.stream}: {risk}"))
    if fleet.open_server:
        report.add(
            Finding(
                "open_server_accepted" if allow_open_server else "open_server",
                f"the NATS server at {fleet.shown_url} takes no credentials: anyone who "
                f"reaches it can delete stream {fleet.stream} or limit it so history expires, "
                "and publish as any node (run it with per-node accounts: examples/nats-server/)",
            )
        )


def _require_replica(fleet: Fleet, node: str) -> None:
    if not fleet.has_replica(node):
        raise NotFound(
            f"no replica of {node} in {fleet.stream} at {fleet.shown_url}"
            + (f" (it holds {', '.join(fleet.nodes())})" if fleet.nodes() else "")
        )


def _check_roots(
    tree: CompactRange,
    signed: dict[int, tuple[bytes, int]],
    report: Report,
    where: str,
) -> None:
    entry = signed.get(tree.size)
    if entry is None:
        return
    if tree.root() == entry[0]:
        report.checkpoints += 1
        report.signed_size = max(report.signed_size, tree.size)
    else:
        report.add(
            Finding(
                "checkpoint_mismatch",
                f"the first {tree.size} records of {where} do not hash to the root signed in "
                f"stream message {entry[1]}",
                seq_to=tree.size - 1,
            )
        )


def _finish(
    report: Report, tree: CompactRange, signed: dict[int, tuple[bytes, int]], what: str
) -> None:
    beyond = [s for s in signed if s > tree.size]
    if beyond:
        report.add(
            Finding(
                "truncated",
                f"{what} has {tree.size} records but a checkpoint signs {max(beyond)}",
                seq_from=tree.size,
                seq_to=max(beyond) - 1,
            )
        )
    if tree.size > report.signed_size:
        report.add(
            Finding(
                "unsigned",
                f"records {report.signed_size}..{tree.size - 1} of {what} are not yet covered "
                "by a replicated checkpoint",
                seq_from=report.signed_size,
                seq_to=tree.size - 1,
            )
        )


def verify_node(
    url: str,
    node: str,
    vkey: str | Verifier | Iterable[str | Verifier] | None = None,
    *,
    stream: str = DEFAULT_STREAM,
    trust_stream_keys: bool = False,
    allow_open_server: bool = False,
) -> Report:
    """Verify ``node``'s replicated records against its replicated checkpoints, from the
    stream alone: seqs consecutive from 0, every record parses, every signed root matches.

    ``vkey``: the key(s) you trust; the keys the node replicated are used only with
    ``trust_stream_keys`` (``ValueError`` otherwise). ``NotFound`` when ``node`` replicated
    nothing there. A stream setting that lets history expire is a note; a server without
    credentials is a failure unless ``allow_open_server``; a foreign message is a failure.
    """
    check_node(node)
    with Fleet(url, stream=stream, on_foreign=_quiet) as fleet:
        _require_replica(fleet, node)
        report = Report(f"{fleet.shown_url} {stream} {node}")
        _server_findings(fleet, report, allow_open_server)
        verifiers = _keys(fleet, node, vkey, trust_stream_keys, report)
        signed = fleet.checkpoints(node, verifiers, report)
        if not verifiers and fleet.subjects(checkpoint_subject(node)):
            report.add(Finding("no_key", f"{node} replicated checkpoints but no verifier key"))
        tree = CompactRange()
        expected = 0
        for msg in fleet.messages(decision_subject(node)):
            where = f"{msg.subject}#{msg.metadata.sequence.stream}"
            data = msg.data or b""
            try:
                seq = Fleet.decision(msg).seq
            except CorruptLine as exc:
                report.add(
                    Finding(
                        "foreign_message",
                        f"{where}: not a record of {node} ({exc.args[0] if exc.args else exc}); "
                        "skipped",
                        file=where,
                    )
                )
                continue
            if seq > expected:
                report.add(
                    Finding(
                        "deleted",
                        f"{where}: records {expected}..{seq - 1} are missing",
                        file=where,
                        seq_from=expected,
                        seq_to=seq - 1,
                    )
                )
            elif seq < expected:
                report.add(
                    Finding("reordered", f"{where}: record {seq} after {expected - 1}", file=where)
                )
            expected = max(expected, seq + 1)
            tree.append(leaf_hash(data))
            report.bytes += len(data)
            _check_roots(tree, signed, report, f"{node}'s replicated records")
        report.records = tree.size
        _finish(report, tree, signed, f"{node}'s replicated log")
        return report


def witness(
    root: str | os.PathLike[str] | None,
    url: str,
    node: str,
    vkey: str | Verifier | Iterable[str | Verifier] | None = None,
    *,
    stream: str = DEFAULT_STREAM,
    trust_stream_keys: bool = False,
    allow_open_server: bool = False,
) -> Report:
    """Check the local log at ``root`` against what ``node`` replicated: every replicated
    record must be the same bytes locally, and the local records must hash to every
    replicated signed root. A local rewrite after replication fails here even if the local
    checkpoints were re-signed. Keys, credentials and ``NotFound`` as for ``verify_node``."""
    from .files import FileStore

    check_node(node)
    base = resolve_root(str(root) if root is not None else None)
    store = FileStore(Path(base), create=False)
    try:
        with Fleet(url, stream=stream, on_foreign=_quiet) as fleet:
            _require_replica(fleet, node)
            report = Report(f"{base} against {fleet.shown_url} {stream} {node}")
            _server_findings(fleet, report, allow_open_server)
            verifiers = _keys(fleet, node, vkey, trust_stream_keys, report)
            signed = fleet.checkpoints(node, verifiers, report)
            replicated = _own_records(fleet, node, report)
            tree = CompactRange()
            for day in store.days():
                for _, lineno, line in store.lines(day):
                    where = f"{day}.jsonl"
                    msg = next(replicated, None)
                    if msg is not None and (msg.data or b"") != line:
                        report.add(
                            Finding(
                                "altered",
                                f"{where}:{lineno}: local record {tree.size} differs from its "
                                f"replicated copy (stream message {msg.metadata.sequence.stream})",
                                file=where,
                                line=lineno,
                                seq_from=tree.size,
                                seq_to=tree.size,
                            )
                        )
                    tree.append(leaf_hash(line))
                    report.bytes += len(line) + 1
                    _check_roots(tree, signed, report, "the local log")
            missing = sum(1 for _ in replicated)
            report.records = tree.size
            if missing:
                report.add(
                    Finding(
                        "deleted",
                        f"the stream holds {missing} more records of {node} than the local log",
                        seq_from=tree.size,
                        seq_to=tree.size + missing - 1,
                    )
                )
            _finish(report, tree, signed, "the local log")
            return report
    finally:
        store.close()
