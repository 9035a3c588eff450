"""``JetStreamStore``: a ``Store`` whose records live only in JetStream, for writers without a
disk: ``DecisionLog(store=JetStreamStore(url, node="gate-1"))``. It writes the stream and
subjects ``rtrace replicate`` writes, so fleet reading and ``verify --source`` work on it.

The guarantees of the file store, kept the JetStream way:

- **seq**: each record is published expecting the subject's last message
  (``Nats-Expected-Last-Subject-Sequence``). That check is the writer lock: any number of
  writers, in any processes or containers, may write as one node; a writer that loses the
  race catches up and takes the next seq: seqs stay consecutive, never shared.
- **durability**: ``append`` returns once JetStream acknowledged the record (a quorum of R3).
- **retries**: a timed-out publish is retried with the same bytes, id and expectation, so a
  try that landed is recognised ("duplicate", or "wrong last sequence" plus our own record on
  reading the subject). If no answer comes within ``ack_deadline``, the record's fate is not
  known: ``StorageError`` says so, and the next append first learns it from the stream.
- **tree**: the writer keeps the node's RFC 9162 compact range (O(log n) memory) and signs a
  checkpoint once ``checkpoint_every`` records are unsigned, after ``checkpoint_seconds``, and
  on close; unlike the file store, at no fixed sizes and not at the end of a UTC day.

A ``store.Store`` only: reads go to the stream, and ``verify_node`` (not ``prove``) checks it.
Tests: ``tests/test_store_contract.py``, ``tests/test_jetstream_store.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .checkpoint import CHECKPOINT_EVERY, CHECKPOINT_SECONDS, Checkpoint
from .errors import (
    ConflictError,
    CorruptLine,
    NotFound,
    ReasoningTraceError,
    ReplicationError,
    StorageError,
)
from .jetstream import DEFAULT_STREAM, check_node, checkpoint_subject, decision_subject, key_subject
from .keys import load_signer
from .note import Signer, sign_note
from .record import Decision, Pending, format_utc
from .store import AppendResult
from .stream_messages import checkpoint_size, leaf_or_corrupt
from .stream_reader import StreamReader
from .stream_writer import WrongLastSequence, publish_after, publish_within
from .tree import CompactRange, leaf_hash

if TYPE_CHECKING:
    from nats.js.api import PubAck

__all__ = ["JetStreamStore"]

logger = logging.getLogger("reasoning_trace")


class JetStreamStore:
    """A log stored in JetStream as node ``node`` of ``stream`` (see the module docstring).

    ``key`` is the signing key (a ``Signer`` or a key file; default: as ``rtrace keys``
    finds it); ``origin`` names the checkpoints (default ``reasoning-trace/<node>``).
    """

    def __init__(
        self,
        url: str,
        node: str,
        *,
        stream: str = DEFAULT_STREAM,
        replicas: int = 1,
        origin: str | None = None,
        key: Signer | str | Path | None = None,
        clock: Callable[[], int] = time.time_ns,
        checkpoint_every: int = CHECKPOINT_EVERY,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
        ack_timeout: float = 2.0,
        ack_deadline: float = 30.0,
        poll: float = 0.05,
    ) -> None:
        self.node = check_node(node)
        self.stream = stream
        self.origin = origin or f"reasoning-trace/{node}"
        self._subject = decision_subject(node)
        self._clock = clock
        self._every = checkpoint_every
        self._seconds = checkpoint_seconds
        self._ack_timeout = ack_timeout
        self._ack_deadline = ack_deadline
        self._poll = poll
        self._signer = (
            key
            if isinstance(key, Signer)
            else load_signer(self.origin, Path(key) if key is not None else None)
        )
        self._lock = threading.RLock()
        self._tree = CompactRange()
        self._sseqs = array("Q")  # seq -> stream seq
        self._ids: dict[str, int] = {}
        self._last_sseq = 0
        self._closed = False
        self._reader = StreamReader(url, stream=stream, create=True, replicas=replicas)
        try:
            self._catch_up()
            self._ck_sseq, self._signed = self._newest_checkpoint()
            self._signed_at = time.monotonic()
            self._publish_key()
        except BaseException:
            self._reader.close()
            raise

    # --- the subject, read back ----------------------------------------------------------------

    def _catch_up(self) -> None:
        """Take in records other writers (or our unanswered tries) added to the subject."""
        with self._lock:
            for msg in self._reader.messages(self._subject, start=self._last_sseq + 1):
                data, sseq = msg.data or b"", msg.metadata.sequence.stream
                seq, d = leaf_or_corrupt(data, msg.headers, self._subject, sseq)
                if seq != len(self._sseqs):
                    raise StorageError(
                        f"{self._subject} holds record {seq} where {len(self._sseqs)} was due "
                        f"(stream message {sseq}): this node's history is not consecutive"
                    )
                self._tree.append(leaf_hash(data))
                self._sseqs.append(sseq)
                if d is not None:
                    self._ids[d.id] = seq
                self._last_sseq = sseq

    def _newest_checkpoint(self) -> tuple[int, int]:
        msg = self._reader.last_message(checkpoint_subject(self.node))
        if msg is None:
            return 0, 0
        return msg.seq or 0, checkpoint_size(msg.data or b"")

    def _publish_key(self) -> None:
        subject = key_subject(self.node)
        msg = self._reader.last_message(subject)
        keys = (msg.data or b"").decode().splitlines() if msg is not None else []
        mine = str(self._signer.verifier)
        if mine in keys:
            return
        data = "".join(f"{k}\n" for k in [*keys, mine]).encode()
        expected = (msg.seq or 0) if msg is not None else 0
        try:
            self._publish(subject, data, f"{self.node}/key/{mine}", expected)
        except WrongLastSequence:
            self._publish_key()  # another writer published meanwhile: merge with theirs

    # --- writing -------------------------------------------------------------------------------

    def _publish(self, subject: str, data: bytes, msg_id: str, expected: int) -> int:
        """Publish until answered, for up to ``ack_deadline`` (see ``publish_within``)."""
        return publish_within(
            self._reader, subject, data, msg_id, expected, self._ack_timeout, self._ack_deadline
        )

    async def _pub(self, subject: str, data: bytes, msg_id: str, expected: int) -> PubAck:
        return await publish_after(
            self._reader.js, self.stream, subject, data, msg_id, expected, self._ack_timeout
        )

    def append(self, batch: Sequence[Pending], *, keep_lock: bool = False) -> list[AppendResult]:
        """Store ``batch`` in order, each record once JetStream acknowledged it.

        Records are published one after another: after a failure, the batch's earlier
        records stay stored and the later ones get the same ``StorageError`` (the file store
        stores all or none). A run of new records is published from the event loop in one
        go, so a batch of many costs one thread hop, not one per record.
        """
        results: list[AppendResult] = []
        failed: StorageError | None = None
        with self._lock:
            if self._closed:
                raise StorageError(f"the JetStream store of {self.node} is closed")
            i = 0
            while i < len(batch):
                if failed is not None:
                    results.append(failed)
                    i += 1
                    continue
                run = self._new_run(batch[i:])
                first: tuple[int, str, bytes] | None = None
                if run:
                    done, first = self._reader.bridge.run(
                        self._publish_run(run, len(self._sseqs), self._last_sseq)
                    )
                    for pending, (seq, micros, when, line, sseq) in zip(run, done, strict=False):
                        self._took(pending, line, sseq)
                        results.append(pending.decision(seq, micros, when, line))
                    i += len(done)
                    if first is None:
                        continue
                try:  # one record the slow way: retries, catching up, ids already stored
                    results.append(self._append_one(batch[i], first))
                except ConflictError as exc:
                    results.append(exc)
                except StorageError as exc:
                    failed = exc
                    results.append(exc)
                i += 1
            self._maybe_sign()
        return results

    def _new_run(self, batch: Sequence[Pending]) -> list[Pending]:
        """The leading records of ``batch`` whose ids are new (neither stored nor repeated)."""
        run: list[Pending] = []
        seen: set[str] = set()
        for pending in batch:
            if pending.id in self._ids or pending.id in seen:
                break
            seen.add(pending.id)
            run.append(pending)
        return run

    async def _publish_run(
        self, run: Sequence[Pending], seq: int, last: int
    ) -> tuple[list[tuple[int, int, str, bytes, int]], tuple[int, str, bytes] | None]:
        """Publish ``run`` back to back; stop at the first record not plainly acknowledged.

        Returns the stored records (seq, micros, when, line, stream seq) and, if it stopped,
        the stopped record's composition, which must be retried byte for byte (it may have
        landed)."""
        from nats.errors import Error as NatsError

        done: list[tuple[int, int, str, bytes, int]] = []
        for pending in run:
            micros = self._clock() // 1000
            when = format_utc(micros)
            line = pending.compose(seq, micros, when)
            try:
                ack = await self._pub(self._subject, line, f"{self.node}/{pending.id}", last)
            except (NatsError, TimeoutError, OSError):  # OSError: ours too; slow path decides
                return done, (micros, when, line)
            if ack.duplicate or ack.seq <= last:
                return done, (micros, when, line)
            done.append((seq, micros, when, line, ack.seq))
            seq, last = seq + 1, ack.seq
        return done, None

    def _took(self, pending: Pending, line: bytes, sseq: int) -> None:
        """Take a record the stream acknowledged into this writer's state."""
        self._tree.append(leaf_hash(line))
        self._ids[pending.id] = len(self._sseqs)
        self._sseqs.append(sseq)
        self._last_sseq = sseq

    def _stored_as(self, pending: Pending) -> Decision | ConflictError | None:
        seq = self._ids.get(pending.id)
        if seq is None:
            return None
        stored = self.get(seq)
        if stored.content_key() == pending.content:
            return stored
        return ConflictError(pending.id, stored)

    def _append_one(
        self, pending: Pending, first: tuple[int, str, bytes] | None = None
    ) -> Decision:
        """Store one record, retrying through outages and catching up with other writers.
        ``first``: a composition already tried, to publish again byte for byte first."""
        known = self._stored_as(pending)
        while known is None:
            seq = len(self._sseqs)
            if first is not None:
                (micros, when, line), first = first, None
            else:
                micros = self._clock() // 1000
                when = format_utc(micros)
                line = pending.compose(seq, micros, when)
            try:
                sseq = self._publish(
                    self._subject, line, f"{self.node}/{pending.id}", self._last_sseq
                )
            except WrongLastSequence:
                self._catch_up()  # someone appended: take their records, then the next seq
                known = self._stored_as(pending)  # ... or it was our own earlier try
                continue
            except ReplicationError as exc:
                raise StorageError(
                    f"record {pending.id} not confirmed: {exc}; if it was stored, it is seq "
                    f"{seq} and this store finds it before its next append"
                ) from exc
            if sseq <= self._last_sseq:  # "duplicate": our earlier try, already taken in
                self._catch_up()
                known = self._stored_as(pending)
                continue
            self._took(pending, line, sseq)
            return pending.decision(seq, micros, when, line)
        if isinstance(known, ConflictError):
            raise known
        return known

    def _maybe_sign(self, *, force: bool = False) -> None:
        size = len(self._sseqs)
        if size <= self._signed:
            return
        due = size - self._signed >= self._every
        late = time.monotonic() - self._signed_at >= self._seconds
        if not (force or due or late):
            return
        note = sign_note(Checkpoint(self.origin, size, self._tree.root()).body(), [self._signer])
        try:
            self._ck_sseq = self._publish(
                checkpoint_subject(self.node),
                note.encode(),
                f"{self.node}/checkpoint/{size}",
                self._ck_sseq,
            )
        except WrongLastSequence:
            self._ck_sseq, self._signed = self._newest_checkpoint()  # another writer signed
            return
        except ReplicationError as exc:  # the records are stored; signing is retried later
            logger.warning("reasoning_trace: checkpoint of %d not published: %s", size, exc)
            return
        self._signed, self._signed_at = size, time.monotonic()

    def release(self) -> None:
        """Nothing to release: the expected-sequence check is the lock."""

    # --- reading -------------------------------------------------------------------------------

    def size(self) -> int:
        """The number of records (after taking in other writers' records)."""
        self._catch_up()
        return len(self._sseqs)

    def read(self, start: int = 0, stop: int | None = None) -> Iterator[Decision]:
        """Decisions with ``start <= seq < stop``, read from the stream."""
        n = self.size()
        start = max(start, 0)
        stop = n if stop is None else min(stop, n)
        if start >= stop:
            return
        for msg in self._reader.messages(self._subject, start=self._sseqs[start]):
            sseq = msg.metadata.sequence.stream
            seq, d = leaf_or_corrupt(msg.data, msg.headers, self._subject, sseq)
            if d is not None and seq < stop:
                yield d
            if seq >= stop - 1:
                return

    def recent(
        self, limit: int, on_corrupt: Callable[[CorruptLine], None] | None = None
    ) -> list[Decision]:
        """The newest ``limit`` decisions, oldest first."""
        n = self.size()
        return list(self.read(max(0, n - limit), n))

    def get(self, key: int | str) -> Decision:
        """One decision by seq or id (one request to the stream)."""
        seq = self._ids.get(key) if isinstance(key, str) else key
        if seq is None or not 0 <= seq < len(self._sseqs):
            self._catch_up()
            seq = self._ids.get(key) if isinstance(key, str) else key
            if seq is None or not 0 <= seq < len(self._sseqs):
                raise NotFound(f"no decision with {'id' if isinstance(key, str) else 'seq'} {key}")
        msg = self._reader.bridge.run(self._reader.js.get_msg(self.stream, self._sseqs[seq]))
        if (d := leaf_or_corrupt(msg.data, msg.headers, self._subject, msg.seq or 0)[1]) is None:
            raise NotFound(f"seq {key} is a line of the original module that does not parse")
        return d

    def scan(self, since_us: int | None, until_us: int | None) -> Iterator[Decision]:
        """Every decision (the stream has no day files to skip); callers filter exactly."""
        return self.read(0)

    def follow(self, after_seq: int | None, stop: Callable[[], bool]) -> Iterator[Decision]:
        """Every decision after ``after_seq`` as it lands, from any writer, until ``stop()``.

        The starting point is fixed when this is called, not at the first ``next()``: with
        ``after_seq=None`` nothing recorded after the call is missed.
        """
        return self._follow(self.size() if after_seq is None else max(after_seq + 1, 0), stop)

    def _follow(self, pos: int, stop: Callable[[], bool]) -> Iterator[Decision]:
        while not stop():
            n = self.size()
            if pos < n:
                for d in self.read(pos, n):
                    yield d
                    pos = d.seq + 1
                continue
            time.sleep(self._poll)

    def close(self) -> None:
        """Sign the records not yet covered by a checkpoint, then disconnect."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._maybe_sign(force=True)
            except ReasoningTraceError as exc:
                logger.warning("reasoning_trace: closing checkpoint not published: %s", exc)
            finally:
                self._reader.close()
