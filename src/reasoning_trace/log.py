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

Longer than 400 lines because it is the package's one front door: recording (the group
commit), reading and the integrity calls each stay a few lines that hand over to the store,
and a user reading the API should find all of it here.
"""

from __future__ import annotations

import _thread
import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from .checkpoint import CHECKPOINT_EVERY, CHECKPOINT_SECONDS, Checkpoints
from .errors import (
    CorruptLine,
    NotFound,
    ReasoningTraceError,
    RecordError,
    StorageError,
    UsageError,
)
from .events import Subscription
from .files import FileStore, resolve_sync
from .index_sql import MAX_SEQ
from .layout import resolve_root
from .origin import check_origin
from .proof import ConsistencyProof, InclusionProof
from .query import ActionStats, Criteria, Filter, Page, Stats, check_limit
from .record import MAX_LINE_BYTES, Decision, Pending, prepare
from .redact import Redactor, check_redactors
from .signed_tree import SignedTree
from .store import AppendResult, IndexedStore, Store, TreeStore
from .tree import leaf_hash

if TYPE_CHECKING:
    from .witness_client import Outcome, WitnessClient
    from .witness_policy import WitnessConfig

__all__ = ["DecisionLog"]

logger = logging.getLogger("reasoning_trace")

T = TypeVar("T")


def _outcome(result: object) -> Decision:
    if isinstance(result, BaseException):
        raise result
    assert isinstance(result, Decision)
    return result


def _result(result: object) -> AppendResult:
    """One result of a batch as ``record_many`` returns it: the log's refusals are values;
    anything else (``KeyboardInterrupt``, a bug) is raised, as ``record`` raises it."""
    if isinstance(result, Decision | ReasoningTraceError):
        return result
    assert isinstance(result, BaseException)
    raise result


#: The arguments of ``record``, as the keys of one decision given to ``record_many``.
_FIELDS = ("action", "approved", "votes", "subject", "reason", "id")


_SEQ_TEXT = re.compile(r"[0-9]+", re.ASCII)
_LEAD = object()  # handed to a waiter that is to lead the next batch


class _Waiter:
    """One queued record; ``gate`` is held until a leader hands over a result or the lead."""

    __slots__ = ("gate", "pending", "result", "thread")

    def __init__(self, pending: Pending) -> None:
        self.pending = pending
        self.thread = _thread.get_ident()
        self.result: object = None
        self.gate = _thread.allocate_lock()
        self.gate.acquire()


class DecisionLog:
    """An append-only, durable log of decisions under one root directory.

    ``root`` resolves as SPEC 2 says (argument, ``$REASONING_TRACE_DIR``, per-user data dir);
    ``sync`` as SPEC 3 (argument, ``$REASONING_TRACE_SYNC``, ``batch``). ``redact`` rules run
    before anything is written; ``node`` is stamped on every record this log writes.

    ``origin`` names the log's checkpoints and its signing key (SPEC 4), decided by
    ``origin.log_origin``: the argument, else ``$REASONING_TRACE_ORIGIN``, else the log's own
    (it keeps it when moved or copied), else the name of an explicit key file, else
    ``reasoning-trace/<hostname>/<folder>-<8 hex>`` for a new log. An argument that is not the
    log's own origin raises ``OriginConflict`` here; ``$REASONING_TRACE_ORIGIN`` is checked
    before the first write (reading needs no origin). ``key``: the signing key file (else
    ``$REASONING_TRACE_KEY``, else the per-user key file of the origin). Each log has a key of
    its own: a new log whose configured origin's key file already exists (another log's) is
    refused with ``SharedKeyError`` on its first write, unless ``shared_ok=True`` says the
    key is shared on purpose (``keys.log_signer``).

    ``witnesses``: the C2SP tlog-witness witnesses each signed checkpoint is sent to (a
    witnesses file's path, or its lines, or ``WitnessConfig``s; default: ``<root>/witnesses``
    when there is one; see ``witness_policy``). A thread per witness sends them (``record``
    never waits for a witness) and keeps their cosignatures beside the checkpoints; ``close``
    signs a last checkpoint and gives them at most ``witness_drain`` seconds (what is left
    is sent by the next process that records, or ``rtrace witness push``).
    ``witness_backoff``: the first and the longest wait between tries of a witness that is
    down, in seconds.
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
        integrity: bool = True,
        origin: str | None = None,
        key: str | os.PathLike[str] | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
        shared_ok: bool = False,
        witnesses: str | os.PathLike[str] | Sequence[str | WitnessConfig] | None = None,
        witness_drain: float = 2.0,
        witness_backoff: tuple[float, float] = (1.0, 300.0),
    ) -> None:
        self.root = resolve_root(root)
        if origin is not None:
            check_origin(origin)  # before a missing root is created
        self.sync = resolve_sync(sync)
        self.node = node
        self.max_line_bytes = max_line_bytes
        self._redact = check_redactors(redact)
        tree = None
        if integrity:

            def tree(root: Path) -> SignedTree:
                return SignedTree(
                    root,
                    origin=origin,
                    key=Path(key) if key is not None else None,
                    every=checkpoint_every,
                    seconds=checkpoint_seconds,
                    shared_ok=shared_ok,
                    on_signed=self._checkpoint_signed,
                )

        self._store: Store = store or FileStore(
            self.root, sync=self.sync, create=create, clock=clock or time.time_ns, tree=tree
        )
        self._mutex = threading.Lock()
        self._idle = threading.Condition(self._mutex)  # signalled when no batch is in flight
        self._queue: list[_Waiter] = []
        self._leading = False
        self._solo: int | None = None  # the thread whose record alone made the last batch
        self._closed = False
        self._direct_lock = threading.Lock()  # sync="never": one appender at a time
        self._inflight = 0
        self._clock = clock or time.time_ns
        self._witnesses = None if witnesses is None else _witness_list(witnesses)
        self._witness_drain = witness_drain
        self._witness_backoff = witness_backoff
        self._witness_client: WitnessClient | None = None
        self._wrote = False  # this process recorded (a writer: its checkpoints go to witnesses)

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
        pending = self._prepare(action, approved, votes, subject, reason, id)
        if self.sync == "never":
            return _outcome(self._direct([pending])[0])
        return _outcome(self._commit([pending])[0])

    def record_many(self, decisions: Iterable[Mapping[str, Any]]) -> list[AppendResult]:
        """Record many decisions in one group commit; one result per decision, in order.

        Each decision is a mapping of ``record``'s arguments: ``action`` and ``approved``,
        and where given ``votes``, ``subject``, ``reason`` and ``id``. Each is validated
        exactly as ``record`` validates it, before anything is written: a refused one gets its
        ``RecordError`` and uses no seq, and the valid ones are stored together (on the file
        store: one locked append, one fsync, the checkpoint schedule kept per record).

        A result is the stored ``Decision`` (for an id already recorded with the same
        content: the stored one), the ``RecordError`` that refused it, a ``ConflictError``
        (its id is recorded with other content), or a ``StorageError`` when the store could
        not write it: the file store then stores none of the batch. Only a closed log raises
        (``StorageError``). The whole batch is held in memory: give a huge input in chunks
        (``rtrace record --jsonl`` commits 1,000 lines at a time). Tests: ``tests/test_log.py``.
        """
        results: list[AppendResult | None] = []
        valid: list[Pending] = []
        where: list[int] = []
        for fields in decisions:
            try:
                pending = self._prepare_fields(fields)
            except RecordError as exc:
                results.append(exc)
                continue
            where.append(len(results))
            results.append(None)
            valid.append(pending)
        if valid:
            stored = self._direct(valid) if self.sync == "never" else self._commit(valid)
            for i, result in zip(where, stored, strict=True):
                results[i] = _result(result)
        return results  # type: ignore[return-value]  # every None was filled in above

    def _prepare_fields(self, fields: Mapping[str, Any]) -> Pending:
        """``prepare`` for one decision given as a mapping of ``record``'s arguments."""
        if not isinstance(fields, Mapping):
            raise RecordError("", "a decision must be a mapping of record's arguments")
        unknown = sorted(str(name) for name in fields if name not in _FIELDS)
        if unknown:
            raise RecordError(unknown[0], f"unknown field (a decision has {', '.join(_FIELDS)})")
        for name in ("action", "approved"):
            if name not in fields:
                raise RecordError(name, "required")
        return self._prepare(
            fields["action"],
            fields["approved"],
            fields.get("votes", {}),
            fields.get("subject", {}),
            fields.get("reason", ""),
            fields.get("id"),
        )

    def _prepare(
        self,
        action: Any,
        approved: Any,
        votes: Any,
        subject: Any,
        reason: Any,
        id: Any,
    ) -> Pending:
        """Validate, redact and encode one decision for this log (``record.prepare``)."""
        return prepare(
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

    def _direct(self, batch: list[Pending]) -> Sequence[object]:
        """``sync="never"``: no fsync to share, so no queue; each caller appends in turn.

        A plain lock lets a running thread record many decisions without a thread switch
        (each switch costs tens of microseconds under the GIL); the writer lock is kept while
        other threads of this process are waiting to record, and given back when none are.
        """
        if not self._wrote:
            self._first_write()
        with self._mutex:
            if self._closed:
                raise StorageError(f"the decision log at {self.root} is closed")
            self._inflight += 1
        try:
            with self._direct_lock:
                results = self._store.append(batch, keep_lock=self._inflight > 1)
        finally:
            with self._mutex:
                self._inflight -= 1
                idle = self._inflight == 0
            if idle:
                self._store.release()
        return results

    def _commit(self, pendings: list[Pending]) -> list[object]:
        """Group commit: queue the records; the leader stores the whole queue in one append.

        Waiters block on a lock of their own (no ``Condition``, no thundering herd); a leader
        that finds more records queued when it is done hands the lead to the oldest waiter
        and returns, so no caller stays leader for more than one batch. One caller's records
        are queued together, so they land in one batch (the leader takes the whole queue) and
        the first of them is the one that may be handed the lead.
        """
        if not self._wrote:
            self._first_write()
        mine = [_Waiter(pending) for pending in pendings]
        me = mine[0]
        with self._mutex:
            if self._closed:
                raise StorageError(f"the decision log at {self.root} is closed")
            self._queue.extend(mine)
            lead = not self._leading
            self._leading = True
        if not lead:
            me.gate.acquire()
            if me.result is not _LEAD:
                for waiter in mine[1:]:
                    waiter.gate.acquire()  # a leader stores them with the first
                return [waiter.result for waiter in mine]
        elif self._solo != me.thread:
            # Let threads a previous leader just released take the GIL and queue their next
            # record before this batch is cut; otherwise batches stay at one record each. Not
            # after a batch of this thread's alone: a lone writer has nobody to wait for, and
            # on a busy host a yield gives the CPU away for a whole time slice.
            os.sched_yield()
        with self._mutex:
            batch, self._queue = self._queue, []
        self._solo = me.thread if len(batch) == 1 and batch[0] is me else None
        results: Sequence[object]
        store = self._store
        try:
            results = store.append([w.pending for w in batch], keep_lock=bool(self._queue))
        except BaseException as exc:  # noqa: BLE001 -- handed to every waiter, re-raised
            results = [exc] * len(batch)
        for waiter, result in zip(batch, results, strict=True):
            waiter.result = result
            waiter.gate.release()  # for this caller's own records: released, never awaited
        with self._mutex:
            if self._queue:
                successor = self._queue[0]
                successor.result = _LEAD
                successor.gate.release()
                return [waiter.result for waiter in mine]
            self._leading = False
            self._idle.notify_all()
        store.release()
        return [waiter.result for waiter in mine]

    # --- reading -----------------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of decisions in the log."""
        return self._store.size()

    def recent(
        self, limit: int = 200, *, on_corrupt: Callable[[CorruptLine], None] | None = None
    ) -> list[Decision]:
        """The newest ``limit`` decisions, oldest first, across day files.

        A corrupt line raises ``CorruptLine`` (with its place), unless ``on_corrupt`` is given:
        then it is handed the error and the line is skipped. A ``limit`` below 0 raises
        ``QueryError``.
        """
        check_limit(limit)
        return self._store.recent(limit, on_corrupt)

    def get(self, key: int | str) -> Decision:
        """The decision with this seq (int) or id (str); raises ``NotFound``.

        A string of ASCII digits is a seq; other digits (fullwidth, superscript, Arabic-Indic)
        are not, and a seq beyond the 64-bit range is not found rather than converted.
        """
        if isinstance(key, str) and _SEQ_TEXT.fullmatch(key):
            if len(key) > 19 or int(key) > MAX_SEQ:
                raise NotFound(f"no decision with seq {key[:24]}{'...' if len(key) > 24 else ''}")
            key = int(key)
        return self._store.get(key)

    def iter(self, **criteria: Unpack[Criteria]) -> Iterator[Decision]:
        """Stream the decisions matching every given criterion (``query.Criteria``), oldest
        first, in constant memory.

        ``voter`` keeps decisions in which that voter voted against; ``subject`` keeps those
        whose subject has each given key with the given value.
        """
        return self.select(Filter.build(**criteria))

    def query(
        self,
        flt: Filter,
        *,
        limit: int | None = None,
        newest_first: bool = False,
        before_seq: int | None = None,
    ) -> list[Decision]:
        """The decisions ``flt`` matches (with ``before_seq``: only seqs below it, a cursor).

        Filters beyond time, pages newest first and cursors go through the derived index
        (caught up first, so it never misses a record); time ranges read only their days.
        A ``limit`` or ``before_seq`` below 0 raises ``QueryError``.
        """
        Page(limit, newest_first, before_seq)  # checks them, whichever path answers
        use_index = flt.selective or newest_first or before_seq is not None
        if use_index and isinstance(self._store, IndexedStore):
            return self._store.select(flt, Page(limit, newest_first, before_seq))
        if before_seq is not None:
            raise StorageError("cursors need a store with an index (store.IndexedStore)")
        if newest_first:
            found: list[Decision] = []
            for d in self.select(flt):
                found.append(d)
            found.reverse()
            return found[:limit] if limit is not None else found
        return list(itertools.islice(self.select(flt), limit))

    def query_lines(
        self, flt: Filter, *, limit: int | None = None, newest_first: bool = False
    ) -> list[bytes]:
        """The stored lines ``query`` would return (cheaper: nothing is parsed if the index
        decides the filter exactly)."""
        if flt.selective and isinstance(self._store, IndexedStore):
            lines = self._store.select_lines(flt, Page(limit, newest_first))
            if lines is not None:
                return lines
        return [d.line for d in self.query(flt, limit=limit, newest_first=newest_first)]

    def stats(self, flt: Filter | None = None, *, approximate: bool = False) -> Stats:
        """Approval rate per action, vetoes per voter and decisions per day, as the records
        themselves count them (a time range reads only its days). A file store answers from
        the per-day-file aggregates its derived index keeps, believed only for a day file
        unchanged since it was counted and under their tag (``index_stats``); other day files,
        and filters on voters or subjects, are counted from the records (SPEC 4a).

        ``approximate``: read the aggregates the derived index keeps instead (milliseconds
        on any size, but only as right as the index): for operational gauges such as
        ``/metrics``, never for what an auditor is shown.
        """
        if approximate and isinstance(self._store, IndexedStore):
            raw = self._store.index_stats(flt or Filter())
            return Stats(
                [ActionStats(str(a), int(n), int(ok or 0)) for a, n, ok in raw["actions"]],
                [(str(v), int(n)) for v, n in raw["voters"]],
                [(str(d), int(n), int(ok or 0)) for d, n, ok in raw["days"]],
                [(str(d), int(n), int(ok or 0)) for d, n, ok in raw["nodes"]],
            )
        if isinstance(self._store, FileStore):
            counted = self._store.exact_stats(flt or Filter())
            if counted is not None:
                return counted
        return Stats.of(self.select(flt or Filter()))

    def select(self, flt: Filter) -> Iterator[Decision]:
        """Stream the decisions that ``flt`` matches, oldest first."""
        scan = self._store.scan(flt.since_us, flt.until_us)
        if flt.is_empty:
            return scan
        return filter(flt.matches, scan)

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

    def subscribe(
        self,
        name: str,
        callback: Callable[[dict[str, Any]], object],
        *,
        gate: Callable[[Decision], dict[str, Any] | None] | None = None,
        start: int | None = None,
    ) -> Subscription:
        """Deliver every decision after the subscriber's durable cursor to ``callback``.

        At-least-once, from the log: the writer never waits for a subscriber. ``gate`` decides
        what leaves the process (default: the SPEC 5 summary); ``start`` is the seq after which
        a new subscriber begins (default: from now). See ``events.Subscription``.
        """
        return Subscription(self, name, callback, gate=gate, start=start)

    # --- integrity -------------------------------------------------------------------------

    @property
    def checkpoints(self) -> Checkpoints:
        """The log's signed checkpoints as stored (``checkpoint.Checkpoints``: entries, the
        newest note, the published verifier keys). Raises ``StorageError`` when the store keeps
        no checkpoint files."""
        if not isinstance(self._store, TreeStore):
            raise StorageError("this log's store keeps no checkpoint files (store.TreeStore)")
        return self._store.checkpoints

    def _tree(self, *, write: bool = False) -> AbstractContextManager[SignedTree]:
        """The store's tree caught up to the head; ``StorageError`` if it keeps none."""
        if not isinstance(self._store, TreeStore):
            raise StorageError("proofs and checkpoints need a store that keeps a tree (TreeStore)")
        return self._store.signed_tree(write=write)

    def checkpoint(self) -> str:
        """Sign a checkpoint of the whole log now; return its note (the newest if no news).

        Raises ``NotFound`` for an empty log, ``ForkError`` if the log no longer extends the
        last checkpoint it signed.
        """
        with self._tree(write=True) as tree:
            return tree.checkpoint_now(time.time_ns() // 1000)

    def prove(self, key: int | str, size: int | None = None) -> InclusionProof:
        """An inclusion proof of one decision (by seq or id) in the tree of ``size`` records
        (RFC 9162 section 2.1.3; ``SignedTree.prove``).

        ``size`` defaults to the newest checkpoint, so the proof comes with the note it
        verifies against. Proving never signs (reading never writes): a decision that no
        checkpoint covers yet raises ``NotFound`` (sign one with ``checkpoint()``), and a log
        shorter than its newest checkpoint ``UnreconciledLog``; a ``size`` that does not hold
        the decision raises ``UsageError``.
        """
        decision = self.get(key)
        with self._tree() as tree:
            return tree.prove(decision.seq, leaf_hash(decision.line), size)

    def prove_with(self, action: Callable[[SignedTree], T]) -> T:
        """Run ``action(tree)`` on the log's tree caught up to its head (reading: no lock,
        nothing signed, unless this log is the writer)."""
        with self._tree() as tree:
            return action(tree)

    def tree_root(self, size: int) -> bytes | None:
        """The root hash of the tree of the first ``size`` records (``None``: the log holds
        fewer), from the cached hashes, caught up from the day files."""
        with self._tree() as tree:
            return tree.root_at(size)

    def consistency(self, old: int, new: int | None = None) -> ConsistencyProof:
        """A consistency proof from the tree of ``old`` records to that of ``new`` (default:
        the whole log; RFC 9162 section 2.1.4). Raises ``UsageError`` unless
        ``0 < old <= new <= len(log)``."""
        with self._tree() as tree:
            return tree.consistency(old, new)

    # --- witnesses (C2SP tlog-witness) ------------------------------------------------------

    def _checkpoint_signed(self) -> None:
        """This process signed a checkpoint (so it writes the log): wake the witness client,
        started on the first, when the log has witnesses. Only sets an event: the writer
        lock is held here."""
        client = self._witness_client
        if client is None:
            client = self._start_witnesses()
        if client is not None:
            client.wake()

    def _first_write(self) -> None:
        """This process writes the log: checkpoints an earlier writer signed and could not
        deliver (the witnesses' cursor is behind the newest) are sent now, in the background."""
        from .cosigned import witnesses_behind

        self._wrote = True
        witnesses = self._witnesses
        if witnesses is None:
            witnesses = self._witnesses = _configured_witnesses(self.root)
        names = [w.name for w in witnesses]
        if names and self._witness_client is None and witnesses_behind(self.root, names):
            self._start_witnesses()

    def _start_witnesses(self) -> WitnessClient | None:
        from .witness_client import WitnessClient

        with self._mutex:
            if self._witness_client is not None:
                return self._witness_client
            witnesses = self._witnesses
            if witnesses is None:
                witnesses = _configured_witnesses(self.root)
            if not witnesses:
                self._witnesses = []
                return None
            first, most = self._witness_backoff
            try:
                client = WitnessClient(
                    self.root,
                    witnesses,
                    lambda old, new: self.consistency(old, new).proof,
                    first=first,
                    most=most,
                )
            except UsageError as exc:
                logger.error("reasoning_trace: the log's witnesses are not used: %s", exc)
                self._witnesses = []
                return None
            self._witness_client = client.start()
            return client

    def _sign_for_witnesses(self) -> None:
        """On close, the final checkpoint is signed before the witness client stops, so that
        it is sent (the store would sign the same on close)."""
        try:
            with self._tree(write=True) as tree:
                tree.sign_current(self._clock() // 1000, automatic=True)
        except (OSError, ReasoningTraceError) as exc:
            logger.error("reasoning_trace: no checkpoint on close for the witnesses: %s", exc)

    def sync_witnesses(self, *, force: bool = True, deadline: float = 30.0) -> list[Outcome]:
        """Send the newest checkpoint to every witness that has not cosigned it, now, all at
        once; what each did (``witness_client.Outcome``), a witness not done within
        ``deadline`` seconds ``unavailable`` (``rtrace witness push``). ``UsageError`` when
        the log has no witnesses."""
        from .witness_client import WitnessClient

        witnesses = self._witnesses
        if witnesses is None:
            witnesses = _configured_witnesses(self.root, strict=True)
        if not witnesses:
            raise UsageError(
                f"the log at {self.root} has no witnesses (list them in {self.root}/witnesses)"
            )
        client = WitnessClient(
            self.root, witnesses, lambda old, new: self.consistency(old, new).proof
        )
        try:
            return client.sync(force=force, deadline=deadline)
        finally:
            client.close(0)

    # --- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Finish pending writes, stop followers and release the store."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True  # refuse new records; let the batch in flight finish
            while self._leading:
                self._idle.wait()
        with self._direct_lock:
            pass  # a direct append in flight has finished
        client = self._witness_client
        if client is not None or (self._wrote and self._witnesses):
            self._sign_for_witnesses()  # wakes the client, started by the first checkpoint
            client = self._witness_client or self._start_witnesses()  # or a cursor behind
        if client is not None:
            client.close(self._witness_drain)  # what is not sent by then: the next writer's
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


def _witness_list(
    given: str | os.PathLike[str] | Sequence[str | WitnessConfig],
) -> list[WitnessConfig]:
    """The witnesses given to ``DecisionLog``: a file's path, or its lines, or configs."""
    from .witness_policy import WitnessConfig, read_witnesses

    if isinstance(given, str | os.PathLike):
        return read_witnesses(given)
    return [WitnessConfig.of(item) for item in given]


def _configured_witnesses(root: Path, *, strict: bool = False) -> list[WitnessConfig]:
    """The witnesses ``<root>/witnesses`` names (none without the file). A file that cannot
    be used is logged at ERROR (``strict``: raised): recording goes on, unwitnessed."""
    from .layout import Layout
    from .witness_policy import read_witnesses

    path = Layout(root).witnesses
    if not path.exists():
        return []
    try:
        return [w for w in read_witnesses(path) if w.url is not None]
    except UsageError as exc:
        if strict:
            raise
        logger.error("reasoning_trace: the log's witnesses are not used: %s", exc)
        return []
