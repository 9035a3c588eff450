"""The fleet: every node's replicated log, read from the JetStream stream.

``Fleet`` offers the reading half of ``DecisionLog`` (``recent``, ``follow``, ``query``,
``stats``) over all nodes at once, interleaved in time, so ``rtrace --source nats://…`` runs
the same commands across a fleet. ``verify_node`` checks one node's replicated records
against its replicated signed checkpoints from the stream alone; ``witness`` checks a local
log against what was replicated, so a rewrite after replication is found even when the
rewriter re-signed the local checkpoints with the node's own key.
Tests: ``tests/test_fleet.py``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import Checkpoint, open_checkpoint
from .errors import CorruptLine, NoteError, SignatureError, UnknownKey
from .files import resolve_root
from .jetstream import (
    DEFAULT_STREAM,
    Bridge,
    check_node,
    checkpoint_subject,
    connect,
    decision_subject,
    ensure_stream,
    expiry_risks,
    key_subject,
    last_message,
    node_of,
)
from .note import Verifier
from .query import Filter, Stats
from .record import Decision, parse_record
from .tree import CompactRange, leaf_hash
from .verify import Finding, Report, _verifiers

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

__all__ = ["Fleet", "verify_node", "witness"]

BATCH = 1024


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
    arriving close together are printed in time order.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str = DEFAULT_STREAM,
        hold: float = 0.2,
        create: bool = False,
        replicas: int = 1,
    ) -> None:
        from nats.js.errors import NotFoundError

        self.url = url
        self.stream = stream
        self.hold = hold
        self.root = url  # where the records come from, as DecisionLog.root says for a log
        self._bridge = Bridge()
        try:
            self._nc = self._bridge.run(connect(url, name="rtrace-fleet"))
            self._js = self._nc.jetstream(timeout=5)
            try:
                if create:
                    self._bridge.run(ensure_stream(self._js, stream, replicas=replicas))
                else:
                    self._bridge.run(self._js.stream_info(stream))
            except NotFoundError:
                from .errors import ReplicationError

                raise ReplicationError(
                    f"there is no stream {stream!r} at {url}: nothing was replicated there"
                ) from None
        except BaseException:
            if hasattr(self, "_nc"):
                self._bridge.run(self._nc.close())
            self._bridge.close()
            raise
        self._end = 0  # the stream's last seq when the newest read began (0: none yet)
        self._delivered: dict[str, int] = {}  # subject -> newest stream seq a read returned

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

    def messages(self, subject: str, *, start: int = 1) -> Iterator[Msg]:
        """The stream's messages on ``subject`` from stream seq ``start`` up to the last one
        there now, in stream order."""
        last = self._bridge.run(last_message(self._js, self.stream, subject))
        if last is None or (last.seq or 0) < start:
            return
        end = last.seq or 0
        with closing(self._batches(subject, start, 0.5)) as batches:
            for batch in batches:
                for msg in batch:
                    seq = msg.metadata.sequence.stream
                    if seq > self._delivered.get(msg.subject, 0):
                        self._delivered[msg.subject] = seq
                    yield msg
                    if seq >= end:
                        return

    def _batches(self, subject: str, start: int, wait: float) -> Generator[list[Msg], None, None]:
        """Batches of ``subject``'s messages from stream seq ``start`` as they arrive, an
        empty one after each ``wait`` seconds without any; the consumer ends with the loop."""
        inbox = self._bridge.run(self._subscribe(subject, start))
        try:
            while True:
                yield self._bridge.run(inbox.take(wait))
        finally:
            self._bridge.run(inbox.close())

    async def _subscribe(self, subject: str, start: int) -> _Inbox:
        """An ordered consumer of ``subject`` from stream seq ``start``, delivering into an
        inbox by callback (three times the rate of awaiting each message)."""
        from nats.js.api import ConsumerConfig, DeliverPolicy

        inbox = _Inbox()
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, start)
        )
        inbox.sub = await self._js.subscribe(
            subject, stream=self.stream, ordered_consumer=True, config=config, cb=inbox.put
        )
        return inbox

    @staticmethod
    def decision(msg: Msg) -> Decision:
        """The record a decision message holds, with its node (from the subject) if unset."""
        d = parse_record(msg.data, file=f"{msg.subject}#{msg.metadata.sequence.stream}")
        return d if d.node is not None else d._replace(node=node_of(msg.subject))

    def decisions(self, node: str | None = None) -> Iterator[Decision]:
        """Every replicated decision (of ``node``, or of all nodes), in stream order."""
        subject = decision_subject(check_node(node) if node is not None else "*")
        return map(self.decision, self.messages(subject))

    # --- DecisionLog's reading API -------------------------------------------------------------

    def __len__(self) -> int:
        return sum(self.subjects(decision_subject("*")).values())

    def _mark(self) -> None:
        """Note where the stream ends now: a later ``follow`` starts there, skipping what
        reads since returned."""
        info = self._bridge.run(self._js.stream_info(self.stream))
        self._end = info.state.last_seq or 0

    def _start_of_last(self, subject: str, n: int) -> int | None:
        """The stream seq from which ``subject`` holds its last ``n`` records (``None``: it
        holds none). A binary search with "next message on the subject" requests, so tail
        reads O(log stream) messages, not the whole stream."""
        last = self._bridge.run(last_message(self._js, self.stream, subject))
        if last is None:
            return None
        target = parse_record(last.data or b"").seq - n + 1
        lo, hi = 1, last.seq or 1
        if target <= 0 or n <= 0:
            return lo if n > 0 else hi + 1
        while lo < hi:
            mid = (lo + hi) // 2
            msg = self._bridge.run(self._js.get_msg(self.stream, mid, subject=subject, next=True))
            if parse_record(msg.data or b"").seq >= target:
                hi = mid
            else:
                lo = (msg.seq or mid) + 1
        return lo

    def recent(
        self, limit: int = 200, on_corrupt: Callable[[CorruptLine], None] | None = None
    ) -> list[Decision]:
        """The newest ``limit`` decisions across nodes, oldest first, by time (each node's
        last ``limit`` are read, then merged)."""
        self._mark()
        found: list[Decision] = []
        for subject in sorted(self.subjects(decision_subject("*"))):
            start = self._start_of_last(subject, limit)
            if start is None:
                continue
            for msg in self.messages(subject, start=start):
                try:
                    found.append(self.decision(msg))
                except CorruptLine as exc:
                    if on_corrupt is None:
                        raise
                    on_corrupt(exc)
        found.sort(key=_when)
        return found[max(0, len(found) - limit) :] if limit > 0 else []

    def follow(
        self, after_seq: int | None = None, *, stop: Callable[[], bool] | None = None
    ) -> Iterator[Decision]:
        """Every node's new decisions, interleaved in time, from the end of the last read
        (``after_seq`` is per node and so not used across a fleet)."""
        stopped = stop or (lambda: False)
        if self._end == 0:
            self._mark()
        # Held back ``hold`` seconds after arrival, released oldest timestamp first: records of
        # several nodes that arrive close together come out in time order.
        held: list[tuple[float, int, float, Decision]] = []  # (timestamp, tiebreak, arrival, d)
        counter = itertools.count()
        for msg in self._follow_messages(stopped):
            now = time.monotonic()
            if msg is not None:
                if msg.metadata.sequence.stream <= self._delivered.get(msg.subject, 0):
                    continue  # a read already returned it
                d = self.decision(msg)
                heapq.heappush(held, (d.timestamp, next(counter), now, d))
            while held and (msg is None or held[0][2] + self.hold <= now or len(held) > BATCH):
                yield heapq.heappop(held)[3]

    def _follow_messages(self, stop: Callable[[], bool]) -> Iterator[Msg | None]:
        """Messages as they come; ``None`` after each quiet spell, to release held records."""
        with closing(self._batches(decision_subject("*"), self._end + 1, self.hold)) as batches:
            for batch in batches:
                if stop():
                    return
                yield from batch
                if not batch:
                    yield None

    def select(self, flt: Filter) -> Iterator[Decision]:
        """The decisions ``flt`` matches, in stream order."""
        return filter(flt.matches, self.decisions())

    def query(
        self, flt: Filter, *, limit: int | None = None, newest_first: bool = False
    ) -> list[Decision]:
        """The decisions ``flt`` matches across nodes, in time order (``newest_first``:
        reversed); at most ``limit``."""
        found = sorted(self.select(flt), key=_when, reverse=newest_first)
        return found[:limit] if limit is not None else found

    def query_lines(
        self, flt: Filter, *, limit: int | None = None, newest_first: bool = False
    ) -> list[bytes]:
        """The stored lines ``query`` would return."""
        return [d.line for d in self.query(flt, limit=limit, newest_first=newest_first)]

    def stats(self, flt: Filter | None = None) -> Stats:
        """Approval rate per action, vetoes per voter and decisions per day, fleet-wide."""
        return Stats.of(self.select(flt or Filter()))

    def close(self) -> None:
        """Disconnect."""
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
        return [Verifier.parse(v) for v in (msg.data or b"").decode().splitlines() if v.strip()]

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


def _when(d: Decision) -> float:
    return d.timestamp


def _keys(
    fleet: Fleet,
    node: str,
    vkey: str | Verifier | Iterable[str | Verifier] | None,
    report: Report,
) -> list[Verifier]:
    verifiers = _verifiers(vkey)
    if verifiers is None:
        verifiers = fleet.published_keys(node)
        if verifiers:
            report.add(
                Finding(
                    "key_from_stream",
                    f"checked with the key {node} replicated ({verifiers[0].name}); "
                    "give --vkey to check with a key you hold",
                )
            )
    return verifiers


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
) -> Report:
    """Verify ``node``'s replicated records against its replicated checkpoints, from the
    stream alone: seqs consecutive from 0, every record parses, every signed root matches.

    ``vkey``: the key(s) you trust; default, the keys the node replicated (noted). The
    stream's configuration is checked too: a setting that lets history expire is a note.
    """
    check_node(node)
    with Fleet(url, stream=stream) as fleet:
        report = Report(f"{url} {stream} {node}")
        for risk in fleet.stream_risks():
            report.add(Finding("expiring_stream", f"stream {stream}: {risk}"))
        verifiers = _keys(fleet, node, vkey, report)
        signed = fleet.checkpoints(node, verifiers, report)
        if not verifiers and fleet.subjects(checkpoint_subject(node)):
            report.add(Finding("no_key", f"{node} replicated checkpoints but no verifier key"))
        tree = CompactRange()
        expected = 0
        for msg in fleet.messages(decision_subject(node)):
            where = f"{msg.subject}#{msg.metadata.sequence.stream}"
            data = msg.data or b""
            try:
                seq = parse_record(data, file=where).seq
            except CorruptLine as exc:
                report.add(Finding("unparseable", str(exc), file=where))
                seq = expected
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
) -> Report:
    """Check the local log at ``root`` against what ``node`` replicated: every replicated
    record must be the same bytes locally, and the local records must hash to every
    replicated signed root. A local rewrite after replication fails here even if the local
    checkpoints were re-signed."""
    from .files import FileStore

    check_node(node)
    base = resolve_root(str(root) if root is not None else None)
    store = FileStore(Path(base), create=False)
    try:
        with Fleet(url, stream=stream) as fleet:
            report = Report(f"{base} against {url} {stream} {node}")
            verifiers = _keys(fleet, node, vkey, report)
            signed = fleet.checkpoints(node, verifiers, report)
            replicated = fleet.messages(decision_subject(node))
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
