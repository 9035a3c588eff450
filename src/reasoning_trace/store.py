"""The storage interface: what a backend must do so ``DecisionLog`` can run on it.

Contract, kept by every backend and checked by ``tests/test_store_contract.py``:

- ``append(batch)`` stores the batch's decisions in order with consecutive ``seq`` numbers
  assigned under the backend's writer lock (one lock for every thread and process writing the
  same log), each at the instant taken under that lock. A caller-given id already in the log
  yields the stored decision when the content is the same and ``ConflictError`` when it differs,
  and consumes no seq. If the batch cannot be stored durably, every item not stored gets a
  ``StorageError`` and consumes no seq: the file store stores all of a batch or none of it;
  the JetStream store, which acknowledges record by record, may keep a prefix of it (those
  items get their decisions). Returns one result per item.
- ``size()`` is the number of records (the next seq), without scanning.
- ``read(start, stop)`` yields the decisions with ``start <= seq < stop`` in seq order.
- ``recent(limit)`` returns the newest ``limit`` decisions, oldest first, in time independent of
  the log's size.
- ``get(key)`` finds one decision by id or seq without scanning, or raises ``NotFound``.
- ``scan(since_us, until_us)`` yields the decisions whose instant may fall in the range, in seq
  order, in constant memory (callers filter exactly).
- ``follow(after_seq, stop)`` yields every decision after ``after_seq`` as it becomes durable,
  including those written by other processes, until ``stop()`` returns true.
- ``release()`` gives up a writer lock that ``append(..., keep_lock=True)`` kept.
- ``close()`` releases locks and files; the store is unusable afterwards: ``append`` then
  raises ``StorageError``.

Capabilities beyond the core, which ``DecisionLog`` checks by protocol (never by class):

- ``IndexedStore``: a derived index answers filtered queries, newest-first pages and cursors
  (``select``, ``select_lines``) and keeps aggregates (``index_stats``).
- ``TreeStore``: the store keeps the log's Merkle tree and signs its checkpoints;
  ``signed_tree()`` yields the ``SignedTree`` caught up to the head, which answers inclusion
  and consistency proofs (``write=True``: to sign, as the log's writer).

The file store honours all three; the JetStream store honours ``Store``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import CorruptLine, ReasoningTraceError
from .record import Decision, Pending

if TYPE_CHECKING:
    from .checkpoint import Checkpoints
    from .query import Filter, Page
    from .signed_tree import SignedTree

__all__ = ["AppendResult", "IndexedStore", "Store", "TreeStore"]

AppendResult = Decision | ReasoningTraceError


@runtime_checkable
class Store(Protocol):
    """A backend holding one log's records (see the module docstring for the contract)."""

    def append(self, batch: Sequence[Pending], *, keep_lock: bool = False) -> list[AppendResult]:
        """Store ``batch`` durably in order; one result per item.

        ``keep_lock`` hints that another batch follows at once; the backend may keep its writer
        lock until ``release``.
        """
        ...

    def release(self) -> None:
        """Give up a writer lock kept by ``append(keep_lock=True)``."""
        ...

    def size(self) -> int:
        """The number of records in the log."""
        ...

    def read(self, start: int = 0, stop: int | None = None) -> Iterator[Decision]:
        """Decisions with ``start <= seq < stop``, in seq order."""
        ...

    def recent(
        self, limit: int, on_corrupt: Callable[[CorruptLine], None] | None = None
    ) -> list[Decision]:
        """The newest ``limit`` decisions, oldest first. A corrupt line raises ``CorruptLine``
        unless ``on_corrupt`` is given: it is then handed the error and the line skipped."""
        ...

    def get(self, key: int | str) -> Decision:
        """The decision with this seq (int) or id (str)."""
        ...

    def scan(self, since_us: int | None, until_us: int | None) -> Iterator[Decision]:
        """Decisions possibly within ``[since_us, until_us)``, in seq order."""
        ...

    def follow(self, after_seq: int | None, stop: Callable[[], bool]) -> Iterator[Decision]:
        """Every decision after ``after_seq`` (``None``: from now on), as it lands."""
        ...

    def close(self) -> None:
        """Release the backend's resources."""
        ...


@runtime_checkable
class IndexedStore(Store, Protocol):
    """A store whose derived index answers filtered queries (see the module docstring)."""

    def select(self, flt: Filter, page: Page = ...) -> list[Decision]:
        """The decisions ``flt`` matches: the ``page`` of them (``query.Page``)."""
        ...

    def select_lines(self, flt: Filter, page: Page = ...) -> list[bytes] | None:
        """The stored lines ``flt`` matches when the index decides it exactly, else ``None``."""
        ...

    def index_stats(self, flt: Filter) -> dict[str, list[tuple[Any, ...]]]:
        """The aggregates the index keeps for ``flt``: ``actions`` (action, count, approved),
        ``voters`` (voter, vetoes), ``days`` and ``nodes`` (key, count, approved)."""
        ...


@runtime_checkable
class TreeStore(Store, Protocol):
    """A store that keeps the log's Merkle tree and signs its checkpoints."""

    checkpoints: Checkpoints  # the signed checkpoints as stored

    def signed_tree(self, *, write: bool = False) -> AbstractContextManager[SignedTree]:
        """The tree caught up to the head (``write``: under the writer lock, to sign)."""
        ...
