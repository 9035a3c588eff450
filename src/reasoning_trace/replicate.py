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

Checkpoints follow the records they cover; the verifier keys go first.
Tests: ``tests/test_replicate.py``; benchmark: ``bench/bench_replicate.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .checkpoint import Checkpoints
from .errors import CorruptLine, ForkError
from .jetstream import (
    DEFAULT_STREAM,
    WrongLastSequence,
    check_node,
    checkpoint_size,
    checkpoint_subject,
    connect,
    decision_subject,
    default_node,
    ensure_stream,
    is_transient,
    key_subject,
    last_message,
    publish_after,
)
from .log import DecisionLog
from .record import parse_record

if TYPE_CHECKING:
    from nats.js.api import RawStreamMsg
    from nats.js.client import JetStreamContext

__all__ = ["ReplicationStatus", "Replicator", "replicate"]

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
    lags: list[float] = field(default_factory=list)  # seconds from record to ack (last 100k)


class _Stop(Exception):
    """The caller asked the replicator to stop."""


class Replicator:
    """Replicates the log at ``root`` as ``node`` into ``stream`` on the NATS server at ``url``.

    ``replicas`` is used when the stream has to be created. ``batch`` bounds the records held
    in memory; ``poll`` is how often an idle replicator looks for new records; progress is
    logged every ``report_every`` seconds while records flow.
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
    ) -> None:
        self.log = DecisionLog(str(root) if root is not None else None, create=False)
        self.url = url
        self.node = check_node(node or default_node())
        self.stream = stream
        self.replicas = replicas
        self.batch = batch
        self.poll = poll
        self.ack_timeout = ack_timeout
        self.report_every = report_every
        self.status = ReplicationStatus(self.node)
        self._checkpoints = Checkpoints(self.log.root)
        self._subject = decision_subject(self.node)
        self._last_sseq = 0  # stream seq of this node's newest decision message
        self._ck_sseq = 0
        self._ck_size = 0  # tree size of the newest replicated checkpoint
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
        except _Stop:
            pass
        finally:
            self.log.close()
        return self.status

    # --- the loop ------------------------------------------------------------------------------

    async def _run(self, stop: Callable[[], bool], until_caught_up: bool) -> None:
        nc = await connect(self.url, name=f"rtrace-replicate-{self.node}", wait=True)
        try:
            js = nc.jetstream(timeout=self.ack_timeout)
            await self._retrying(
                stop, lambda: ensure_stream(js, self.stream, replicas=self.replicas)
            )
            await self._resume(js, stop)
            reported = time.monotonic()
            while not stop():
                shipped = await self._ship_records(js, stop)
                await self._ship_checkpoints(js, stop)
                if shipped and time.monotonic() - reported >= self.report_every:
                    self._report()
                    reported = time.monotonic()
                if not shipped:
                    if until_caught_up and self.status.next_seq >= len(self.log):
                        return
                    await asyncio.sleep(self.poll)
        finally:
            await nc.close()

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
        backoff = 0.05
        while True:
            if stop():
                raise _Stop
            try:
                return await call()
            except Exception as exc:
                if not is_transient(exc):
                    raise  # an answer (a fork, a refusal, an unsafe stream): not an outage
                problem = exc
            self.status.retries += 1
            if self.status.retries == 1 or self.status.retries % 50 == 0:
                logger.warning("reasoning_trace: JetStream unavailable (%r); retrying", problem)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _resume(self, js: JetStreamContext, stop: Callable[[], bool]) -> None:
        """Find where the stream's copy of this node ends, and check it is our history."""

        async def read() -> tuple[RawStreamMsg | None, RawStreamMsg | None, RawStreamMsg | None]:
            return (
                await last_message(js, self.stream, self._subject),
                await last_message(js, self.stream, checkpoint_subject(self.node)),
                await last_message(js, self.stream, key_subject(self.node)),
            )

        last, ck, key = await self._retrying(stop, read)
        if last is not None:
            self._check_ours(last)
            self._last_sseq = last.seq or 0
            self.status.next_seq = parse_record(last.data or b"").seq + 1
        if ck is not None:
            self._ck_sseq = ck.seq or 0
            self._ck_size = checkpoint_size(ck.data or b"")
        if key is not None:
            self._key_sseq, self._keys = key.seq or 0, key.data or b""
        logger.info(
            "reasoning_trace: replicating %s as %s from seq %d",
            self.log.root,
            self.node,
            self.status.next_seq,
        )

    def _check_ours(self, msg: RawStreamMsg) -> None:
        """The stream's newest record for this node must be the local record of that seq."""
        data = msg.data or b""
        try:
            seq = parse_record(data).seq
        except CorruptLine as exc:
            raise ForkError(f"stream message {msg.seq} on {self._subject} is not a record") from exc
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

    async def _publish(
        self,
        js: JetStreamContext,
        stop: Callable[[], bool],
        subject: str,
        data: bytes,
        msg_id: str,
        expected: int,
    ) -> int:
        """Publish one message expecting ``expected`` as the subject's last; its stream seq."""
        first = True
        while True:
            try:
                ack = await self._retrying(
                    stop,
                    lambda: publish_after(
                        js, self.stream, subject, data, msg_id, expected, self.ack_timeout
                    ),
                )
                return ack.seq
            except WrongLastSequence:
                pass
            # Did an earlier try land? The subject's last message says.
            last = await self._retrying(stop, lambda: last_message(js, self.stream, subject))
            if last is not None and last.data == data:
                self.status.resolved += 1
                return last.seq or 0
            if not first or last is None or last.seq != expected:
                raise ForkError(
                    f"{subject} in stream {self.stream!r} moved on to message "
                    f"{getattr(last, 'seq', 0)} (expected {expected}): another writer "
                    f"publishes as node {self.node!r}"
                )
            first = False  # the server's view was stale: try once more

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
        for entry in self._checkpoints.entries():
            if entry.size <= self._ck_size:
                continue
            if entry.size > self.status.next_seq:
                pending = True  # its records are not all in the stream yet
                break
            self._ck_sseq = await self._publish(
                js,
                stop,
                checkpoint_subject(self.node),
                entry.note.encode(),
                f"{self.node}/checkpoint/{entry.size}",
                self._ck_sseq,
            )
            self._ck_size = entry.size
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
) -> ReplicationStatus:
    """Replicate the log at ``root`` to JetStream (see ``Replicator``); blocks."""
    return Replicator(root, url, node=node, stream=stream, replicas=replicas).run(
        stop, until_caught_up=until_caught_up
    )
