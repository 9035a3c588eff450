"""Reading the stream from synchronous code: a subject's messages, in order, and the records
they hold.

``StreamReader`` connects to the stream (creating it if asked), runs the connection's event
loop in a thread of its own (``Bridge``), and reads a subject's messages by an ephemeral push
consumer delivering into a bounded inbox: ``messages`` up to the subject's end now, each
taken batch acknowledged at once by its last message (flat memory whatever the stream's
size); ``follow_messages`` as they arrive. A read that gets nothing although the stream holds
more fails, at once if the user may not acknowledge, else after ``STALL`` seconds.

Anyone allowed to publish on a node's subject can put a message there that is not one of its
records (``{"seq":999999}``, ``hello``): ``record`` reports such a foreign message (subject
and stream seq, once) and skips it, as local readers report a corrupt line; ``leaf``
raises ``CorruptLine`` for it. Lines of a legacy prefix are leaves like records
(``stream_messages.leaf_of``). The fleet (``fleet.py``), the JetStream store
(``jetstream_store.py``) and the fleet index read through this module. Single messages (the
newest on a subject, the next from a seq) are looked up by ``stream_messages.py``.
Tests: ``tests/test_fleet.py``, ``tests/test_fleet_hostile.py``, ``tests/test_store_contract.py``,
``tests/test_jetstream_store.py``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Generator, Iterator, Mapping
from contextlib import closing
from typing import TYPE_CHECKING, Any, Self, TypeVar

from .errors import CorruptLine, ReplicationError
from .jetstream import (
    DEFAULT_STREAM,
    Problems,
    check_stream,
    connect,
    ensure_stream,
    expiry_risks,
    node_of,
    parse_servers,
    redact_url,
    server_is_open,
)
from .record import Decision
from .stream_messages import last_message, leaf_or_corrupt, message_from

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.api import RawStreamMsg, StreamInfo
    from nats.js.client import JetStreamContext

__all__ = [
    "BATCH",
    "STALL",
    "Bridge",
    "StreamReader",
]

logger = logging.getLogger("reasoning_trace")

BATCH = 1024
STALL = 60.0  # seconds a read may get nothing before it fails (elections take a few)
T = TypeVar("T")


class Bridge:
    """An event loop in a daemon thread, so synchronous code can await NATS calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="rtrace-nats", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and return its result (its exception is raised here)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop and its thread."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


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


class StreamReader:
    """Synchronous reading of ``stream`` on the server(s) at ``url``.

    ``create``: create the stream (with ``replicas``) if it is missing; otherwise a missing
    stream is a ``ReplicationError``. ``on_foreign(subject, stream_seq, why)`` hears of each
    message ``record`` skips because it is not a record of its subject's node (default: a
    logged warning); ``foreign`` holds those skipped so far.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str = DEFAULT_STREAM,
        create: bool = False,
        replicas: int = 1,
        on_foreign: Callable[[str, int, str], None] | None = None,
    ) -> None:
        from nats.js.errors import NotFoundError

        self.url = url
        self.shown_url = redact_url(url)
        self.stream = check_stream(stream)
        self.on_foreign = on_foreign or _log_foreign
        self.foreign: set[tuple[str, int]] = set()  # (subject, stream seq) skipped so far
        self.delivered: dict[str, int] = {}  # subject -> newest stream seq a read returned
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

    @property
    def bridge(self) -> Bridge:
        """The event loop this reader's connection runs on."""
        return self._bridge

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context of this reader's connection."""
        return self._js

    def info(self) -> StreamInfo:
        """The stream's configuration and state, now."""
        return self._bridge.run(self._js.stream_info(self.stream))

    def stream_risks(self) -> list[str]:
        """What in the stream's configuration would let history expire (empty: nothing)."""
        return expiry_risks(self.info().config)

    def subjects(self, pattern: str) -> dict[str, int]:
        """The subjects matching ``pattern`` with their message counts."""
        info = self._bridge.run(self._js.stream_info(self.stream, subjects_filter=pattern))
        return dict(info.state.subjects or {})

    def last_message(self, subject: str) -> RawStreamMsg | None:
        """The newest message on ``subject`` (``None`` if it has none)."""
        return self._bridge.run(last_message(self._js, self.stream, subject))

    def message_from(self, subject: str, seq: int) -> RawStreamMsg | None:
        """The first message on ``subject`` at stream seq ``seq`` or after (``None``: none)."""
        return self._bridge.run(message_from(self._js, self.stream, subject, seq))

    def messages(self, subject: str, *, start: int = 1) -> Iterator[Msg]:
        """The stream's messages on ``subject`` from stream seq ``start`` up to the last one
        there now, in stream order. Read by an ephemeral push consumer that may have at
        most ``4 * BATCH`` messages unacknowledged, each taken batch acknowledged at once
        by its last message (ack-all): memory stays flat whatever the stream's size."""
        last = self.last_message(subject)
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
                    if seq > self.delivered.get(msg.subject, 0):
                        self.delivered[msg.subject] = seq
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

    def follow_messages(
        self, subject: str, start: int, wait: float, stop: Callable[[], bool]
    ) -> Iterator[Msg | None]:
        """``subject``'s messages from stream seq ``start`` as they come, until ``stop()``;
        ``None`` after each ``wait`` seconds without any (to release what a reader holds)."""
        with closing(self._batches(subject, start, wait)) as batches:
            for batch in batches:
                if stop():
                    return
                yield from batch
                if not batch:
                    yield None

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
    def leaf(msg: Msg) -> tuple[int, Decision | None]:
        """What a decision message holds as a leaf of its node's tree (``leaf_of``): (seq,
        record with its node, from the subject, if unset; ``None`` for a legacy prefix line that
        does not parse); ``CorruptLine`` when it is not a record of that node."""
        seq, d = leaf_or_corrupt(msg.data, msg.headers, msg.subject, msg.metadata.sequence.stream)
        return seq, d if d is None or d.node is not None else d._replace(node=node_of(msg.subject))

    def record(
        self, subject: str, sseq: int, data: bytes, headers: Mapping[str, Any] | None = None
    ) -> Decision | None:
        """The record a message holds, or ``None``: after reporting it as foreign, or for a
        legacy prefix line that does not parse (a leaf without a decision)."""
        node = node_of(subject)
        try:
            _, d = leaf_or_corrupt(data, headers, subject, sseq)
        except CorruptLine as exc:
            self.report_foreign(subject, sseq, exc.args[0] if exc.args else str(exc))
            return None
        return d if d is None or d.node is not None else d._replace(node=node)

    def report_foreign(self, subject: str, sseq: int, why: str) -> None:
        """Tell ``on_foreign`` of a message that is not a record of its subject's node, once."""
        if (subject, sseq) not in self.foreign:
            self.foreign.add((subject, sseq))
            self.on_foreign(subject, sseq, why)

    def records(self, subject: str, start: int = 1) -> Iterator[Decision]:
        """The records on one node's decision subject from stream seq ``start``, in order,
        foreign messages skipped and reported."""
        for msg in self.messages(subject, start=start):
            d = self.record(msg.subject, msg.metadata.sequence.stream, msg.data, msg.headers)
            if d is not None:
                yield d

    def close(self) -> None:
        """Disconnect."""
        if not self._bridge.loop.is_closed():
            self._bridge.run(self._nc.close())
            self._bridge.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _log_foreign(subject: str, sseq: int, why: str) -> None:
    logger.warning(
        "reasoning_trace: skipped stream message %d on %s: not a record of its node (%s)",
        sseq,
        subject,
        why,
    )
