"""Replication: ship a node's log to a JetStream stream, exactly once, in order, forever.

The local log is the buffer. The replicator reads the tree's leaves after the last one the stream
holds for its node (the lines of a legacy prefix as they are, then records; leaf ``n`` is message
``n`` of the node's decision subject) and publishes them one at a time, each expecting the subject's
previous message (``Nats-Expected-Last-Subject-Sequence``), so the stream's copy of a node's history
is the local history's prefix and nothing else. It keeps at most ``batch`` records in memory
(backpressure: when the server is slow or away, records wait on disk, not in RAM) and resumes after
a restart or an outage from what the stream says it holds, never from local state. Publishing each
message exactly once through outages, elections and lost answers is ``exactly_once.py``.

Before anything is shipped, the local tree at the size of the newest replicated checkpoint
must have that checkpoint's root, and every checkpoint shipped must be the local tree's root
at its size: a history rewritten (and re-signed) after replication is a ``ForkError`` naming
the first record that differs, and nothing is shipped (``replica_checks.py``). A message on
the node's subject that is not one of its records (anyone with publish rights can put one
there) is reported and stepped over, never taken for a record. A stream that held this
node's history and is gone, or holds less than was shipped, is an incident (``StreamLost``):
it is never silently re-created and re-filled; ``reship=True`` does that once the incident is
reported. What was shipped is noted in ``.rtrace/replicated-<stream>-<node>.json`` (derived:
deleting it only loses that check).

Checkpoints follow the records they cover; the verifier keys go first.
Tests: ``tests/test_replicate.py``, ``tests/test_replicate_hostile.py``; benchmark:
``bench/bench_replicate.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .checkpoint import Checkpoints
from .day_files import DayFiles
from .errors import ForkError, ReplicationError, StreamLost
from .exactly_once import Publisher, ReplicationStatus
from .jetstream import (
    DEFAULT_STREAM,
    Problems,
    Stopped,
    check_node,
    check_stream,
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
from .layout import Layout
from .log import DecisionLog
from .replica_checks import ShippedNote, check_ours, check_tree
from .stream_messages import checkpoint_of, last_message, last_record, leaf_id, leaf_of

if TYPE_CHECKING:
    from nats.js.api import RawStreamMsg
    from nats.js.client import JetStreamContext

__all__ = ["ReplicationStatus", "Replicator", "StreamLost", "replicate"]

logger = logging.getLogger("reasoning_trace")


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
        parse_servers(url)  # a bad URL, node or stream is refused before the log is open
        self.node = check_node(default_node() if node is None else node)
        self.stream = check_stream(stream)
        self.log = DecisionLog(str(root) if root is not None else None, create=False)
        self.url = url
        self.shown_url = redact_url(url)
        self.replicas = replicas
        self.batch = batch
        self.poll = poll
        self.ack_timeout = ack_timeout
        self.report_every = report_every
        self.reship = reship
        self.status = ReplicationStatus(self.node)
        self._problems = Problems()
        self._publisher = Publisher(
            stream, self.shown_url, self._problems, self.status, ack_timeout
        )
        self._checkpoints = Checkpoints(self.log.root)
        self._files = DayFiles(Layout(self.log.root))
        self._subject = decision_subject(self.node)
        self._shipped = ShippedNote(self.log.root, stream, self.node)
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
        except Stopped:
            pass
        finally:
            self._shipped.write(self.status.next_seq, force=True)
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
            js = nc.jetstream(timeout=self.ack_timeout)
            await self._publisher.retrying(js, stop, lambda: self._ensure_stream(js))
            await self._resume(js, stop)
            reported = time.monotonic()
            while not stop():
                shipped = await self._ship_records(js, stop)
                await self._ship_checkpoints(js, stop)
                self._shipped.write(self.status.next_seq)
                if shipped and time.monotonic() - reported >= self.report_every:
                    self._report()
                    reported = time.monotonic()
                if not shipped:
                    if until_caught_up and self.status.next_seq >= len(self.log):
                        return
                    await asyncio.sleep(self.poll)
        finally:
            await nc.close()

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        """Check the stream, creating it only when this log never shipped to it (or
        ``reship``): a stream that vanished after holding our history is an incident."""
        before = self._shipped.read()
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

        (last, record), ck, key = await self._publisher.retrying(js, stop, read)
        if last is not None:
            self._last_sseq = last.seq or 0
        if record is not None:
            check_ours(self.log, self.node, record)
            leaf = leaf_of(record.data, self.node, record.headers)
            assert leaf is not None
            self.status.next_seq = leaf[0] + 1
        if last is not None and last is not record:
            self._publisher.foreign(self._subject, last.seq or 0, "after the last record")
        before = self._shipped.read()
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
                self._publisher.foreign(
                    checkpoint_subject(self.node), ck.seq or 0, "not a checkpoint"
                )
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

    async def _check_tree(self, js: JetStreamContext) -> None:
        """The history under the newest replicated checkpoint is still what was shipped."""
        await check_tree(self.log, self.node, js, self.stream, self._ck_size, self._ck_root)

    async def _ship_records(self, js: JetStreamContext, stop: Callable[[], bool]) -> int:
        start = self.status.next_seq
        if start >= len(self.log):
            return 0
        prefix = self._files.legacy_prefix().leaves
        if start < prefix:  # the legacy prefix's lines are leaves: shipped as they are
            count = min(self.batch, prefix - start)
            lines = list(itertools.islice(self._files.leaves_from(start), count))
            for seq, line in enumerate(lines, start):
                self._last_sseq = await self._publisher.publish(
                    js, stop, self._subject, line, leaf_id(self.node, seq, line), self._last_sseq
                )
                self.status.next_seq = seq + 1
                self.status.records += 1
            return len(lines)
        records = list(self.log.read(start, start + self.batch))
        for d in records:
            self._last_sseq = await self._publisher.publish(
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
            self._key_sseq = await self._publisher.publish(
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
            self._ck_sseq = await self._publisher.publish(
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
