"""Replication: ship a node's log to a JetStream stream, exactly once, in order, forever.

The local log is the buffer. The replicator reads records after the last one the stream holds
for its node and publishes them one at a time, each expecting the subject's previous message
(``Nats-Expected-Last-Subject-Sequence``), so the stream's copy of a node's history is the
local history's prefix and nothing else. It keeps at most ``batch`` records in memory
(backpressure: when the server is slow or away, records wait on disk, not in RAM) and resumes
after a restart or an outage from what the stream says it holds, never from local state.

A retried publish whose first try did land is answered "duplicate" (inside the duplicate
window) or, notably on a 3-replica stream after a leader change, "wrong last sequence": both
are resolved by reading the subject's last message; only a message that is not ours there is
a fork (``ForkError``: another log replicates under this node name, or the local log was
rewritten after replication).

Before anything is shipped, the local tree at the size of the newest replicated checkpoint
must have that checkpoint's root, and every checkpoint shipped must be the local tree's root
at its size: a history rewritten (and re-signed) after replication is a ``ForkError`` naming
the first record that differs, and nothing is shipped. A message on the node's subject that is
not one of its records (anyone with publish rights can put one there) is reported and stepped
over, never taken for a record. A stream that held this node's history and is gone, or holds
less than was shipped, is an incident (``StreamLost``): it is never silently re-created and
re-filled; ``reship=True`` does that once the incident is reported. What was shipped is noted
in ``.rtrace/replicated-<stream>-<node>.json`` (derived: deleting it only loses that check).

Checkpoints follow the records they cover; the verifier keys go first.
Tests: ``tests/test_replicate.py``; benchmark: ``bench/bench_replicate.py``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .checkpoint import Checkpoints
from .errors import CorruptLine, ForkError, ReplicationError, StreamLost
from .jetstream import (
    DEFAULT_STREAM,
    AuthorizationError,
    Problems,
    Stopped,
    check_node,
    checkpoint_subject,
    connect,
    decision_subject,
    default_node,
    ensure_stream,
    key_subject,
    parse_servers,
    redact_url,
    server_is_open,
)
from .log import DecisionLog
from .retry import async_retrying
from .stream_messages import checkpoint_of, last_message, last_record, message_from, record_of
from .stream_writer import WrongLastSequence, is_transient, publish_after

if TYPE_CHECKING:
    from nats.js.api import RawStreamMsg
    from nats.js.client import JetStreamContext

__all__ = ["ReplicationStatus", "Replicator", "StreamLost", "replicate"]

logger = logging.getLogger("reasoning_trace")
T = TypeVar("T")


@dataclass
class ReplicationStatus:
    """What a replicator has done: records and checkpoints shipped, how far, how late."""

    node: str
    next_seq: int = 0  # the first local seq not yet in the stream
    records: int = 0  # records published by this run
    checkpoints: int = 0  # checkpoints published by this run
    retries: int = 0  # publishes retried (timeouts, outages, elections)
    resolved: int = 0  # retries answered "wrong last sequence" that had in fact landed
    foreign: list[tuple[str, int]] = field(default_factory=list)  # (subject, stream seq) skipped
    lags: list[float] = field(default_factory=list)  # seconds from record to ack (last 100k)


class _Stop(Exception):
    """The caller asked the replicator to stop."""


class Replicator:
    """Replicates the log at ``root`` as ``node`` into ``stream`` on the NATS server at ``url``.

    ``replicas`` is used when the stream has to be created. ``batch`` bounds the records held
    in memory; ``poll`` is how often an idle replicator looks for new records; progress is
    logged every ``report_every`` seconds while records flow. ``reship``: the stream lost this
    node's history (an incident, reported): create it again if need be and ship from seq 0.
    """

    def __init__(
        self,
        root: str | Path | None,
        url: str,
        *,
        node: str | None = None,
        stream: str = DEFAULT_STREAM,
        replicas: int = 1,
        batch: int = 256,
        poll: float = 0.005,
        ack_timeout: float = 2.0,
        report_every: float = 10.0,
        reship: bool = False,
    ) -> None:
        self.log = DecisionLog(str(root) if root is not None else None, create=False)
        parse_servers(url)  # a bad URL is refused here, not after the log is open
        self.url = url
        self.shown_url = redact_url(url)
        self.node = check_node(node or default_node())
        self.stream = stream
        self.replicas = replicas
        self.batch = batch
        self.poll = poll
        self.ack_timeout = ack_timeout
        self.report_every = report_every
        self.reship = reship
        self.status = ReplicationStatus(self.node)
        self._problems = Problems()
        self._checkpoints = Checkpoints(self.log.root)
        self._subject = decision_subject(self.node)
        self._shipped = self.log.root / ".rtrace" / f"replicated-{stream}-{self.node}.json"
        self._noted = -1.0  # monotonic time the shipped note was last written
        self._last_sseq = 0  # stream seq of the newest message on this node's decision subject
        self._ck_sseq = 0
        self._ck_size = 0  # tree size of the newest replicated checkpoint
        self._ck_root = b""  # and its root
        self._ck_mtime: float | None = None
        self._key_sseq = 0
        self._keys = b""

    def run(
        self, stop: Callable[[], bool] | None = None, *, until_caught_up: bool = False
    ) -> ReplicationStatus:
        """Replicate until ``stop()`` is true (or, with ``until_caught_up``, until the stream
        holds every record and checkpoint); return the status."""
        try:
            asyncio.run(self._run(stop or (lambda: False), until_caught_up))
        except (_Stop, Stopped):
            pass
        finally:
            self._note_shipped(force=True)
            self.log.close()
        return self.status

    # --- the loop ------------------------------------------------------------------------------

    async def _run(self, stop: Callable[[], bool], until_caught_up: bool) -> None:
        logger.info("reasoning_trace: connecting to %s (waiting until one answers)", self.shown_url)
        nc = await connect(
            self.url,
            name=f"rtrace-replicate-{self.node}",
            wait=True,
            stop=stop,
            problems=self._problems,
        )
        try:
            if server_is_open(nc):
                logger.warning(
                    "reasoning_trace: WARNING: the NATS server at %s takes no credentials: "
                    "anyone who reaches it can delete stream %s or give it limits that expire "
                    "history, and publish as any node. Run it with per-node accounts "
                    "(examples/nats-server/).",
                    self.shown_url,
                    self.stream,
                )
            js = self._js = nc.jetstream(timeout=self.ack_timeout)
            await self._retrying(stop, lambda: self._ensure_stream(js))
            await self._resume(js, stop)
            reported = time.monotonic()
            while not stop():
                shipped = await self._ship_records(js, stop)
                await self._ship_checkpoints(js, stop)
                self._note_shipped()
                if shipped and time.monotonic() - reported >= self.report_every:
                    self._report()
                    reported = time.monotonic()
                if not shipped:
                    if until_caught_up and self.status.next_seq >= len(self.log):
                        return
                    await asyncio.sleep(self.poll)
        finally:
            await nc.close()

    def _shipped_before(self) -> int:
        """How many records a run of this log shipped to this stream as this node, by the
        note it keeps (0: none, or the note was deleted)."""
        try:
            return int(json.loads(self._shipped.read_text())["records"])
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("reasoning_trace: %s is unreadable (%s); ignored", self._shipped, exc)
            return 0

    def _note_shipped(self, *, force: bool = False) -> None:
        """Note how far the stream's copy reaches (at most once a second while running)."""
        now = time.monotonic()
        if not self.status.next_seq or (not force and now - self._noted < 1.0):
            return
        self._noted = now
        note = {"stream": self.stream, "node": self.node, "records": self.status.next_seq}
        tmp = self._shipped.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(note, sort_keys=True))
            os.replace(tmp, self._shipped)
        except OSError as exc:
            logger.warning("reasoning_trace: cannot note replication in %s: %s", tmp, exc)

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        """Check the stream, creating it only when this log never shipped to it (or
        ``reship``): a stream that vanished after holding our history is an incident."""
        before = self._shipped_before()
        try:
            await ensure_stream(js, self.stream, replicas=self.replicas, create=not before)
        except ReplicationError as exc:
            if not before or "there is no stream" not in str(exc):
                raise
            if not self.reship:
                raise StreamLost(
                    f"stream {self.stream!r} is gone from {self.shown_url}, but it held "
                    f"records 0..{before - 1} of node {self.node!r}: it was deleted. That is an "
                    "incident to report; afterwards, replicate with --reship to create it "
                    "again and ship this log from seq 0"
                ) from None
            await ensure_stream(js, self.stream, replicas=self.replicas)

    def _report(self) -> None:
        """Log progress: how far the stream's copy reaches and how late it is."""
        lags = sorted(self.status.lags[-10_000:])
        p99 = lags[int(len(lags) * 0.99)] * 1e3 if lags else 0.0
        logger.info(
            "reasoning_trace: %s: %d records and %d checkpoints shipped; the stream holds "
            "seqs 0..%d of %d; lag p99 %.1f ms",
            self.node,
            self.status.records,
            self.status.checkpoints,
            self.status.next_seq - 1,
            len(self.log),
            p99,
        )

    async def _retrying(self, stop: Callable[[], bool], call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()`` until it answers, riding out outages and elections."""
        async for attempt in async_retrying(first=0.05, most=1.0, retry_on=is_transient):
            with attempt:
                if stop():
                    raise _Stop
                try:
                    answer = await call()
                except Exception as exc:
                    if is_transient(exc):  # else an answer (a fork, a refusal): not an outage
                        await self._outage(exc)
                    raise
        return answer  # the loop ends only after a try that answered

    async def _outage(self, problem: BaseException) -> None:
        """Count and log an outage about to be retried; a refused user or a deleted stream
        is not one (``AuthorizationError``, ``StreamLost``)."""
        from nats.errors import NoRespondersError
        from nats.js.errors import NoStreamResponseError

        if self._problems.denied:
            raise AuthorizationError(
                f"the NATS server at {self.shown_url} refuses this user publishing on "
                f"{self._problems.denied[-1]}: these credentials are not node "
                f"{self.node!r}'s (give --node the name they may publish as)"
            )
        if isinstance(problem, NoRespondersError | NoStreamResponseError):
            await self._check_stream_exists()
        self.status.retries += 1
        if self.status.retries == 1 or self.status.retries % 50 == 0:
            logger.warning("reasoning_trace: JetStream unavailable (%r); retrying", problem)

    async def _check_stream_exists(self) -> None:
        """Nobody answers a publish: unless the server is electing a leader, the stream is
        gone, deleted under a running replicator (``StreamLost``)."""
        from nats.js.errors import NotFoundError

        try:
            await self._js.stream_info(self.stream)
        except NotFoundError:
            raise StreamLost(
                f"stream {self.stream!r} was deleted from {self.shown_url} while it held "
                f"records 0..{self.status.next_seq - 1} of node {self.node!r}: an incident "
                "to report; afterwards, replicate with --reship to ship this log again"
            ) from None
        except Exception as exc:
            if not is_transient(exc):
                raise

    async def _resume(self, js: JetStreamContext, stop: Callable[[], bool]) -> None:
        """Find where the stream's copy of this node ends, and check it is our history."""

        async def read() -> tuple[
            tuple[RawStreamMsg | None, RawStreamMsg | None],
            RawStreamMsg | None,
            RawStreamMsg | None,
        ]:
            return (
                await last_record(js, self.stream, self.node),
                await last_message(js, self.stream, checkpoint_subject(self.node)),
                await last_message(js, self.stream, key_subject(self.node)),
            )

        (last, record), ck, key = await self._retrying(stop, read)
        if last is not None:
            self._last_sseq = last.seq or 0
        if record is not None:
            self._check_ours(record)
            d = record_of(record.data, self.node)
            assert d is not None
            self.status.next_seq = d.seq + 1
        if last is not None and last is not record:
            self._foreign(self._subject, last.seq or 0, "after the last record")
        before = self._shipped_before()
        if self.status.next_seq < before and not self.reship:
            raise StreamLost(
                f"stream {self.stream!r} holds records 0..{self.status.next_seq - 1} of node "
                f"{self.node!r}, but this log shipped 0..{before - 1} to it: replicated "
                "history was lost (the stream was deleted and re-created, or emptied). That is "
                "an incident to report; afterwards, replicate with --reship"
            )
        if ck is not None:
            self._ck_sseq = ck.seq or 0
            try:
                checkpoint = checkpoint_of(ck.data or b"")
            except (ValueError, UnicodeDecodeError):
                self._foreign(checkpoint_subject(self.node), ck.seq or 0, "not a checkpoint")
            else:
                self._ck_size, self._ck_root = checkpoint.size, checkpoint.root
        if key is not None:
            self._key_sseq, self._keys = key.seq or 0, key.data or b""
        await self._check_tree(js)
        logger.info(
            "reasoning_trace: replicating %s as %s from seq %d",
            self.log.root,
            self.node,
            self.status.next_seq,
        )

    def _foreign(self, subject: str, sseq: int, what: str) -> None:
        """Report a message on one of this node's subjects that is not its own, and step
        over it."""
        self.status.foreign.append((subject, sseq))
        logger.warning(
            "reasoning_trace: stream %s message %d on %s is not %s's (%s): someone else "
            "published there; it is skipped, and replication continues after it",
            self.stream,
            sseq,
            subject,
            self.node,
            what,
        )

    def _check_ours(self, msg: RawStreamMsg) -> None:
        """The stream's newest record for this node must be the local record of that seq."""
        data = msg.data or b""
        d = record_of(data, self.node)
        assert d is not None
        seq = d.seq
        try:
            local = next(iter(self.log.read(seq, seq + 1)), None)
        except CorruptLine as exc:
            raise ForkError(f"local record {seq} is unreadable: {exc}") from exc
        if local is None or local.line != data:
            raise ForkError(
                f"the stream holds another record {seq} for node {self.node!r} than "
                f"{self.log.root}: the local log was rewritten after replication, or another "
                "log replicates under this node name"
            )

    async def _check_tree(self, js: JetStreamContext, sizes: tuple[int, ...] = ()) -> None:
        """The local tree at the newest replicated checkpoint's size must have its root
        (``ForkError`` naming the first record that differs otherwise)."""
        if not self._ck_size:
            return
        local = self.log.tree_root(self._ck_size)
        if local == self._ck_root:
            return
        if local is None:
            raise ForkError(
                f"the local log at {self.log.root} holds {len(self.log)} records, but node "
                f"{self.node!r} replicated a checkpoint of {self._ck_size}: the local log was "
                "truncated or replaced after replication; nothing shipped"
            )
        seq = await self._first_difference(js)
        if seq is None:
            raise ForkError(
                f"the local records of {self.log.root} match the {self._ck_size} replicated "
                "ones, but the cached tree hashes do not: delete "
                f"{self.log.root / '.rtrace' / 'hashes'} (derived) and replicate again; "
                "nothing shipped"
            )
        raise ForkError(
            f"the local log at {self.log.root} forks from what node {self.node!r} replicated: "
            f"record {seq} differs, so the trees differ from size {seq + 1} on (the stream's "
            f"checkpoint of size {self._ck_size} has root "
            f"{base64.b64encode(self._ck_root).decode()}, the local tree "
            f"{base64.b64encode(local).decode()}); the local history was rewritten after "
            "replication; nothing shipped"
        )

    async def _first_difference(self, js: JetStreamContext) -> int | None:
        """The first seq whose local record is not the replicated one (read in full: this
        runs only once a fork is certain); ``None`` if every record matches."""
        from nats.js.api import ConsumerConfig, DeliverPolicy

        sub = await js.subscribe(
            self._subject,
            stream=self.stream,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        try:
            local = iter(self.log.read(0, self._ck_size))
            for seq in range(self._ck_size):
                while True:
                    msg = await sub.next_msg(timeout=10)
                    if record_of(msg.data, self.node) is not None:
                        break
                mine = next(local, None)
                if mine is None or mine.line != msg.data:
                    return seq
            return None
        finally:
            await sub.unsubscribe()

    async def _publish(
        self,
        js: JetStreamContext,
        stop: Callable[[], bool],
        subject: str,
        data: bytes,
        msg_id: str,
        expected: int,
    ) -> int:
        """Publish one message expecting ``expected`` as the subject's last; return the
        subject's last stream seq after it (its own, unless foreign messages followed)."""
        first = True
        while True:
            try:
                ack = await self._retrying(
                    stop,
                    lambda after=expected: publish_after(  # type: ignore[misc]
                        js, self.stream, subject, data, msg_id, after, self.ack_timeout
                    ),
                )
                return ack.seq
            except WrongLastSequence:
                pass
            # Did an earlier try land, or did someone else publish? The subject says.
            last = await self._retrying(stop, lambda: last_message(js, self.stream, subject))
            if last is None:
                raise StreamLost(
                    f"{subject} in stream {self.stream!r} is empty, but it held message "
                    f"{expected}: the stream was re-created or emptied; an incident to report"
                )
            if last.data == data:
                self.status.resolved += 1
                return last.seq or 0
            if last.seq == expected and first:
                first = False  # the server's view was stale: try once more
                continue
            newer = await self._retrying(
                stop,
                lambda a=expected, b=last.seq or 0: self._messages_between(  # type: ignore[misc]
                    js, subject, a, b
                ),
            )
            if any(m.data == data for m in newer):
                self.status.resolved += 1  # it landed; foreign messages followed it
                for m in newer:
                    if m.data != data:
                        self._foreign(subject, m.seq or 0, "published after this node's")
                return last.seq or 0
            for m in newer:
                if subject == self._subject and record_of(m.data, self.node) is not None:
                    raise ForkError(
                        f"{subject} in stream {self.stream!r} moved on to message {m.seq} "
                        f"(expected {expected}), a record of another history: another writer "
                        f"publishes as node {self.node!r}"
                    )
            for m in newer:
                self._foreign(subject, m.seq or 0, "not a record of this log")
            expected = last.seq or 0  # step over them; never re-use their positions
            first = True

    async def _messages_between(
        self, js: JetStreamContext, subject: str, after: int, upto: int
    ) -> list[RawStreamMsg]:
        """The messages on ``subject`` with ``after`` < stream seq <= ``upto``."""
        found = []
        seq = after + 1
        while seq <= upto and (msg := await message_from(js, self.stream, subject, seq)):
            if (msg.seq or 0) > upto:
                break
            found.append(msg)
            seq = (msg.seq or seq) + 1
        return found

    async def _ship_records(self, js: JetStreamContext, stop: Callable[[], bool]) -> int:
        start = self.status.next_seq
        if start >= len(self.log):
            return 0
        records = list(self.log.read(start, start + self.batch))
        for d in records:
            self._last_sseq = await self._publish(
                js, stop, self._subject, d.line, f"{self.node}/{d.id}", self._last_sseq
            )
            self.status.next_seq = d.seq + 1
            self.status.records += 1
            lags = self.status.lags
            lags.append(time.time() - d.timestamp)
            if len(lags) > 100_000:
                del lags[:50_000]
        return len(records)

    async def _ship_checkpoints(self, js: JetStreamContext, stop: Callable[[], bool]) -> None:
        newest = self._checkpoints.newest
        try:
            mtime = newest.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self._ck_mtime:
            return
        keys = "".join(f"{v}\n" for v in self._checkpoints.verifiers()).encode()
        if keys and keys != self._keys:
            self._key_sseq = await self._publish(
                js,
                stop,
                key_subject(self.node),
                keys,
                f"{self.node}/key/{hashlib.sha256(keys).hexdigest()[:32]}",
                self._key_sseq,
            )
            self._keys = keys
        pending = False
        checked = False
        for entry in self._checkpoints.entries():
            if entry.size <= self._ck_size:
                continue
            if entry.size > self.status.next_seq:
                pending = True  # its records are not all in the stream yet
                break
            if not checked:
                await self._check_tree(js)  # the history under it is still what was shipped
                checked = True
            root = checkpoint_of(entry.note.encode()).root
            if self.log.tree_root(entry.size) != root:
                raise ForkError(
                    f"the checkpoint of size {entry.size} in {entry.file}:{entry.line} does not "
                    f"sign the local tree of {entry.size} records: the log or its checkpoints "
                    "were rewritten; nothing more shipped (run `rtrace verify`)"
                )
            self._ck_sseq = await self._publish(
                js,
                stop,
                checkpoint_subject(self.node),
                entry.note.encode(),
                f"{self.node}/checkpoint/{entry.size}",
                self._ck_sseq,
            )
            self._ck_size, self._ck_root = entry.size, root
            self.status.checkpoints += 1
        if not pending:
            self._ck_mtime = mtime


def replicate(
    root: str | Path | None,
    url: str,
    *,
    node: str | None = None,
    stream: str = DEFAULT_STREAM,
    replicas: int = 1,
    stop: Callable[[], bool] | None = None,
    until_caught_up: bool = False,
    reship: bool = False,
) -> ReplicationStatus:
    """Replicate the log at ``root`` to JetStream (see ``Replicator``); blocks."""
    return Replicator(root, url, node=node, stream=stream, replicas=replicas, reship=reship).run(
        stop, until_caught_up=until_caught_up
    )
