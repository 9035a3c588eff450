"""``DecisionLog``: the embedded, append-only decision log.

``record`` validates and encodes the decision in the caller's thread (a refusal touches
nothing), then joins a group commit: the first waiting thread becomes the leader, takes every
queued record, and has the store write them in one locked append with one fsync; threads that
arrive meanwhile queue for the next batch. Under ``sync="batch"`` (the default) every ``record``
returns only once its line is on stable storage, and concurrent callers share the fsync.

A gate that must not act unrecorded calls ``record`` and acts only if it returns: it raises on
refusal and on storage failure (fail closed). The seed-compatible ``record_decision`` returns
``False`` instead and is for callers that must never raise.
Tests: ``tests/test_log.py``, ``tests/test_processes.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from .errors import ReasoningTraceError, StorageError
from .files import FileStore, resolve_root, resolve_sync
from .query import Filter, TimeSpec
from .record import MAX_LINE_BYTES, Decision, Pending, Redactor, check_redactors, prepare
from .store import AppendResult, Store

__all__ = ["DecisionLog"]


class _Waiter:
    __slots__ = ("pending", "result")

    def __init__(self, pending: Pending) -> None:
        self.pending = pending
        self.result: AppendResult | BaseException | None = None


class DecisionLog:
    """An append-only, durable log of decisions under one root directory.

    ``root`` resolves as SPEC 2 says (argument, ``$REASONING_TRACE_DIR``, per-user data dir);
    ``sync`` as SPEC 3 (argument, ``$REASONING_TRACE_SYNC``, ``batch``). ``redact`` rules run
    before anything is written; ``node`` is stamped on every record this log writes.
    """

    def __init__(
        self,
        root: str | None = None,
        *,
        sync: str | None = None,
        node: str | None = None,
        redact: Sequence[Redactor] = (),
        max_line_bytes: int = MAX_LINE_BYTES,
        create: bool = True,
        clock: Callable[[], int] | None = None,
        store: Store | None = None,
    ) -> None:
        self.root = resolve_root(root)
        self.sync = resolve_sync(sync)
        self.node = node
        self.max_line_bytes = max_line_bytes
        self._redact = check_redactors(redact)
        self._store: Store = store or FileStore(
            self.root, sync=self.sync, create=create, clock=clock or time.time_ns
        )
        self._cond = threading.Condition()
        self._queue: list[_Waiter] = []
        self._leading = False
        self._closed = False

    # --- writing -----------------------------------------------------------------------------

    def record(
        self,
        action: str,
        approved: bool,
        votes: Mapping[str, Any],
        subject: Mapping[str, Any],
        reason: str = "",
        *,
        id: str | None = None,
    ) -> Decision:
        """Record one decision; return it once durable (per ``sync``).

        Raises ``RecordError`` (naming the field path) for a decision that cannot be stored
        exactly, ``ConflictError`` when a caller-given ``id`` is already recorded with other
        content (the same content returns the stored decision), and ``StorageError`` when the
        store cannot write. In every failure nothing is written and no seq is used.
        """
        pending = prepare(
            action,
            approved,
            votes,
            subject,
            reason,
            id=id,
            node=self.node,
            redact=self._redact,
            max_line_bytes=self.max_line_bytes,
        )
        return self._commit(pending)

    def _commit(self, pending: Pending) -> Decision:
        me = _Waiter(pending)
        cond = self._cond
        with cond:
            if self._closed:
                raise StorageError(f"the decision log at {self.root} is closed")
            self._queue.append(me)
            while me.result is None:
                if self._leading:
                    cond.wait()
                    continue
                self._leading = True
                batch, self._queue = self._queue, []
                cond.release()
                try:
                    results: Sequence[AppendResult | BaseException]
                    results = self._store.append([w.pending for w in batch])
                except ReasoningTraceError as exc:
                    results = [exc] * len(batch)
                except BaseException as exc:  # noqa: BLE001 -- handed to every waiter, re-raised
                    # Never leave followers waiting on a batch that died with the leader.
                    results = [exc] * len(batch)
                finally:
                    cond.acquire()
                for waiter, result in zip(batch, results, strict=True):
                    waiter.result = result
                self._leading = False
                cond.notify_all()
        result = me.result
        if isinstance(result, BaseException):
            raise result
        return result

    # --- reading -----------------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of decisions in the log."""
        return self._store.size()

    def recent(self, limit: int = 200) -> list[Decision]:
        """The newest ``limit`` decisions, oldest first, across day files."""
        return self._store.recent(limit)

    def get(self, key: int | str) -> Decision:
        """The decision with this seq (int) or id (str); raises ``NotFound``."""
        if isinstance(key, str) and key.isdigit():
            key = int(key)
        return self._store.get(key)

    def iter(
        self,
        *,
        since: TimeSpec = None,
        until: TimeSpec = None,
        action: str | None = None,
        approved: bool | None = None,
        voter: str | None = None,
        subject: Mapping[str, Any] | None = None,
        node: str | None = None,
    ) -> Iterator[Decision]:
        """Stream the decisions matching every given filter, oldest first, in constant memory.

        ``voter`` keeps decisions in which that voter voted against; ``subject`` keeps those
        whose subject has each given key with the given value.
        """
        flt = Filter.build(
            since=since,
            until=until,
            action=action,
            approved=approved,
            voter=voter,
            subject=subject,
            node=node,
        )
        return self.select(flt)

    def select(self, flt: Filter) -> Iterator[Decision]:
        """Stream the decisions that ``flt`` matches, oldest first."""
        matches = flt.matches
        for decision in self._store.scan(flt.since_us, flt.until_us):
            if matches(decision):
                yield decision

    def read(self, start: int = 0, stop: int | None = None) -> Iterator[Decision]:
        """The decisions with ``start <= seq < stop``, in seq order."""
        return self._store.read(start, stop)

    def follow(
        self,
        after_seq: int | None = None,
        *,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[Decision]:
        """Yield decisions as they land, from any process, across UTC midnight.

        Starts after ``after_seq`` (``None``: with the next new decision) and blocks for more
        until ``stop()`` returns true or the log is closed.
        """

        def stopped() -> bool:
            return self._closed or (stop is not None and stop())

        return self._store.follow(after_seq, stopped)

    # --- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Finish pending writes, stop followers and release the store."""
        with self._cond:
            while self._leading or self._queue:
                self._cond.wait(0.1)
            if self._closed:
                return
            self._closed = True
        self._store.close()

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DecisionLog({str(self.root)!r}, sync={self.sync!r})"
