"""The log's Merkle tree as its writer keeps it, its signing schedule, and its proofs.

``SignedTree`` extends the derived hash file with each batch under the writer lock and signs a
checkpoint (SPEC section 4) every ``every`` records (a fixed cadence: checkpoints of one log
agree on sizes), after ``seconds`` while the log grows, when a UTC day ends, and on close.
It proves each new tree consistent with the last checkpoint (hashing the day files afresh
before it refuses, loudly: ``ForkError``) and answers RFC 9162 proofs from the hashes.
Tests: ``tests/test_checkpoint.py``, ``tests/test_prove.py``, ``tests/test_faults.py``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .checkpoint import CHECKPOINT_EVERY, CHECKPOINT_SECONDS, Checkpoint, Checkpoints, Entry
from .errors import ForkError, NotFound, ProofError, StorageError, UsageError
from .keys import log_signer
from .layout import Layout
from .metrics import incr
from .note import Signer, sign_note
from .origin import log_origin
from .proof import ConsistencyProof, InclusionProof, verify_consistency
from .record import parse_utc
from .tree import (
    CompactRange,
    HashFile,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    stored_hash_count,
    tree_hash,
)

__all__ = ["SignedTree"]

logger = logging.getLogger("reasoning_trace")


class SignedTree:
    """Extended under the writer lock (``extend``), it signs the checkpoints that fall due and
    answers proofs and roots for any size up to ``size`` (tlog's ``ProveRecord``/``ProveTree``/
    ``TreeHash`` over the stored hash file). A reader's copy (``hashes`` in a private place)
    never signs. ``origin``: as ``origin.log_origin`` decides, a configured one checked at
    once (``OriginConflict``). ``shared_ok``: see ``keys.log_signer``. ``on_signed``: called
    after each checkpoint is signed (it wakes the witness client)."""

    def __init__(
        self,
        root: Path,
        *,
        origin: str | None = None,
        key: Path | None = None,
        every: int = CHECKPOINT_EVERY,
        seconds: float = CHECKPOINT_SECONDS,
        hashes: Path | None = None,
        signs: bool = True,
        shared_ok: bool = False,
        on_signed: Callable[[], None] | None = None,
    ) -> None:
        self.checkpoints = Checkpoints(root)
        self.signs = signs  # False: a reader's copy, which answers proofs and never signs
        self.on_signed = on_signed  # told of each checkpoint signed (the witness client wakes)
        self.root = root
        self.key = key
        self._origin = log_origin(root, origin, key=key) if origin is not None else None
        self._configured, self.shared = origin, shared_ok
        self.every = every
        self.seconds = seconds
        self.hashes = HashFile(str(hashes or Layout(root).hashes))
        self.range: CompactRange | None = None
        self._pending: list[bytes] = []  # stored hashes not yet in the file
        self.halted: str | None = None  # why signing stopped, if it did
        self.owed = False  # a due checkpoint could not be written (a full disk): sign it next
        self.floor_micros = 0  # the newest record's instant: no checkpoint is dated before it
        self._first_batch_done = False
        self._signer: Signer | None = None
        self._last_signed: float | None = None  # monotonic time of the last checkpoint
        self._lines_from: Callable[[int], Iterator[bytes]] | None = None  # the records' lines

    @property
    def origin(self) -> str:
        """The origin this log signs as (``origin.log_origin``), decided once: only reads."""
        if self._origin is None:
            self._origin = log_origin(self.root, key=self.key)
        return self._origin

    @property
    def signer(self) -> Signer:
        """The signing key, loaded (or created, for a log that published none) on first use.

        Raises ``SigningKeyError`` naming the key file when it cannot be used,
        ``OriginConflict`` when ``$REASONING_TRACE_ORIGIN`` is not the log's origin, and
        ``SharedKeyError`` when a new log would take another log's key: the writer calls this
        before its first append, so a log never records while unable to sign.
        """
        if self._signer is None:
            signer = log_signer(self.root, self._configured, key=self.key, shared_ok=self.shared)
            self._origin = signer.name
            self.checkpoints.repair()
            self._signer = signer
        return self._signer

    def ready(self) -> None:
        """Check, before the first record, that this log can sign: see ``signer``."""
        self.signer  # noqa: B018 -- loads and checks the key

    def flush(self) -> None:
        """Write buffered hashes to the hash file (before the writer lock is let go)."""
        if self._pending:
            pending, self._pending = self._pending, []
            self.hashes.append(pending)

    def forget(self) -> None:
        """Drop the tree held in memory (after a failure left it unsure): the next
        ``sync_to`` reads the hash file again and checks it against the records."""
        self.range = None

    def sync_to(
        self,
        size: int,
        lines_from: Callable[[int], Iterator[bytes]],
        *,
        trusted: bool = False,
        floor_micros: int | None = None,
    ) -> CompactRange:
        """The compact range of ``size`` leaves, catching the hash file up from the records.

        ``trusted``: the writer lock was held since this process last extended the tree, so
        nobody else can have changed it and the file need not be checked. ``floor_micros``:
        the newest record's instant, below which no checkpoint is dated.
        """
        if floor_micros is not None:
            self.floor_micros = floor_micros
        self._lines_from = lines_from
        rng = self.range
        if trusted and rng is not None and rng.size == size:
            return rng
        self.flush()
        count = self.hashes.count()
        if rng is not None and rng.size == size and count == stored_hash_count(size):
            return rng
        have = self.hashes.leaves()
        if have > size or count != stored_hash_count(have):
            self.hashes.truncate_to_leaves(min(have, size))
            have = min(have, size)
        rng = CompactRange.load(have, self.hashes)
        if have < size:
            pending = []
            for line in lines_from(have):
                pending.extend(rng.append(leaf_hash(line)))
                if len(pending) >= 65536:
                    self.hashes.append(pending)
                    pending = []
                if rng.size == size:
                    break
            self.hashes.append(pending)
            if rng.size != size:
                raise StorageError(f"the day files hold {rng.size} records, the head says {size}")
        self.range = rng
        return rng

    def extend(
        self,
        start: int,
        prev_day: str | None,
        lines: list[tuple[str, bytes]],
        lines_from: Callable[[int], Iterator[bytes]],
        micros: int,
        before_sign: Callable[[], None] = lambda: None,
        *,
        trusted: bool = False,
    ) -> None:
        """Add a batch's (day, line) leaves after ``start`` records, the last at instant
        ``micros``; sign what is due.

        ``before_sign`` makes the records durable first where the log's writes are not.
        """
        self.floor_micros = micros
        rng = self.sync_to(start, lines_from, trusted=trusted)
        due: list[tuple[int, bytes]] = []
        if not self._first_batch_done:
            self._first_batch_done = True
            if start and self.checkpoints.latest() is None:
                # Records nobody signed yet precede this batch (the original module's, being
                # adopted): a checkpoint signs them before anything else.
                due.append((start, rng.root()))
        pending = self._pending  # nothing below flushes until the loop is done
        day = prev_day
        for line_day, line in lines:
            if day is not None and line_day != day and rng.size:
                due.append((rng.size, rng.root()))  # the UTC day ended: cover all of it
            day = line_day
            pending.extend(rng.append(leaf_hash(line)))
            if self.every and rng.size % self.every == 0:
                due.append((rng.size, rng.root()))
        if len(pending) > 8192:
            self.flush()
        now = time.monotonic()
        if self._last_signed is None:
            self._last_signed = now
        elif self.seconds and now - self._last_signed >= self.seconds:
            due.append((rng.size, rng.root()))
        if self.owed and (not due or due[-1][0] != rng.size):
            due.append((rng.size, rng.root()))  # a checkpoint that could not be written before
        if due:
            before_sign()
            self.flush()
        for size, root in due:
            self.sign(size, root, micros, automatic=True)

    def sign(self, size: int, root: bytes, micros: int, *, automatic: bool = False) -> str | None:
        """Sign a checkpoint for (size, root) unless the newest one already covers it under
        this origin (a log moved to a new origin signs its tree again under it).

        Refuses with ``ForkError`` when it would not extend the last signed checkpoint; the
        automatic schedule logs that error and stops signing instead of raising into a write.
        A reader's copy (``signs=False``) refuses with ``UsageError``: reading never signs.
        """
        if not self.signs:
            raise UsageError(
                f"a reader of {self.root} signs no checkpoint (reading never writes): sign "
                "where the log is written (`rtrace checkpoint --now`)"
            )
        if self.halted:
            if automatic:
                return None
            raise ForkError(self.halted)
        self.flush()
        latest = self.checkpoints.latest()
        if latest is not None:
            try:
                try:
                    self._check_extends(latest, size, root)
                except (ProofError, IndexError):
                    if latest.size > size or self._lines_from is None:
                        raise
                    # The stored hashes are derived (a file cut or damaged under this writer
                    # answers wrongly): hash the day files afresh once before calling the
                    # log's history rewritten.
                    root = self._rehash(size, self._lines_from)
                    self._check_extends(latest, size, root)
                if latest.size == size and latest.note.startswith(f"{self.origin}\n"):
                    if self.owed:  # its line was written; the newest-note file may not be
                        self.checkpoints.write_newest(latest.note)
                        self.owed = False
                    return None
            except IndexError as exc:  # hashes lost while signing: not a fork, sign later
                raise StorageError(f"not signed now: {exc}") from exc
            except ProofError as exc:
                self.halted = (
                    f"refusing to sign size {size}: it does not extend the checkpoint of size "
                    f"{latest.size} signed at {latest.datetime_utc} ({exc}); the log's signed "
                    "history may have been rewritten; run `rtrace verify`"
                )
                if automatic:
                    logger.error("reasoning_trace: %s", self.halted)
                    return None
                raise ForkError(self.halted) from exc
        # A checkpoint is never dated before the records it covers or the checkpoint before
        # it, whatever the clock says: its day file then follows the signing order.
        micros = max(micros, self.floor_micros)
        if latest is not None:
            with contextlib.suppress(ValueError):  # a date this product did not write
                micros = max(micros, parse_utc(latest.datetime_utc))
        checkpoint = Checkpoint(self.origin, size, root)
        note = sign_note(checkpoint.body(), [self.signer])
        try:
            self.checkpoints.append(checkpoint, note, micros)
        except OSError:
            self.owed = True  # signed again, at the then current size, by the next batch
            incr("checkpoint_write_failures")
            raise
        self.owed = False
        self._last_signed = time.monotonic()
        if self.on_signed is not None:
            self.on_signed()
        return note

    def _check_extends(self, latest: Entry, size: int, root: bytes) -> None:
        """Raise ``ProofError`` unless the tree of ``size`` leaves with ``root`` extends (or
        is) the checkpoint ``latest``, proven with the stored hashes."""
        if latest.size > size:
            raise ProofError(f"the log has {size} records, {latest.size} were signed")
        if latest.size == size:
            if latest.root != root:
                raise ProofError(f"size {size} was signed with another root")
        elif latest.size:
            proof = consistency_proof(latest.size, size, self.hashes)
            verify_consistency(latest.size, size, latest.root, root, proof)

    def _rehash(self, size: int, lines_from: Callable[[int], Iterator[bytes]]) -> bytes:
        """Drop the stored hashes and hash the first ``size`` records again from the day
        files; return their root."""
        self._pending = []
        self.range = None
        self.hashes.truncate_to_leaves(0)
        return self.sync_to(size, lines_from).root()

    def sign_current(self, micros: int, *, automatic: bool = False) -> str | None:
        """Sign the tree as far as it is synced (see ``sign``); nothing for an empty log."""
        if self.range is None or self.range.size == 0:
            return None
        return self.sign(self.range.size, self.range.root(), micros, automatic=automatic)

    def note_for(self, size: int) -> str | None:
        """The signed note of the checkpoint of exactly ``size`` records, if one was signed."""
        for entry in self.checkpoints.entries():
            if entry.size == size:
                return entry.note
        return None

    # --- answers (the tree synced to the head first: see ``FileStore.signed_tree``) --------

    @property
    def size(self) -> int:
        """How many leaves the tree holds as synced (0 before the first ``sync_to``)."""
        return self.range.size if self.range is not None else 0

    def inclusion_path(self, seq: int, size: int) -> list[bytes]:
        """RFC 9162 section 2.1.3.1: the inclusion path of leaf ``seq`` in the tree of ``size``
        leaves, from the stored hashes. Raises ``UsageError`` unless ``0 <= seq < size``, and
        ``ProofError`` when the log holds fewer than ``size`` records (a checkpoint's size)."""
        if size > self.size:
            raise ProofError(
                f"the log holds {self.size} records, fewer than the {size} a checkpoint signed: "
                "records were removed (run `rtrace verify`)"
            )
        return inclusion_proof(seq, size, self.hashes)

    def prove(self, seq: int, leaf: bytes, size: int | None = None) -> InclusionProof:
        """An inclusion proof of the leaf ``leaf`` (its hash) at ``seq`` in the tree of ``size``
        leaves, with the signed note of that size where one was signed.

        ``size`` defaults to the newest checkpoint; a leaf no checkpoint covers yet raises
        ``NotFound`` (proving never signs), and a tree shorter than that checkpoint (signed
        records missing) ``ProofError``. A ``size`` outside ``(seq, self.size]`` raises
        ``UsageError``.
        """
        head = self.size
        note: str | None
        if size is None:
            latest = self.checkpoints.latest()
            if latest is None or latest.size <= seq:
                raise NotFound(
                    f"seq {seq} is not yet covered by a signed checkpoint "
                    "(`rtrace checkpoint --now` where the log is written signs one)"
                )
            if latest.size > head:
                raise ProofError(
                    f"the log holds {head} records, fewer than the {latest.size} a checkpoint "
                    f"signed: its newest checkpoint, signed at {latest.datetime_utc}, covers "
                    f"{latest.size} ({latest.file}:{latest.line}); signed records are missing, "
                    "so nothing can be proven in it (`rtrace verify` shows what is missing)"
                )
            size, note = latest.size, latest.note
        elif not _is_size(size) or not seq < size <= head:
            raise UsageError(f"seq {seq} is not in a tree of size {size!r} (log: {head})")
        else:
            note = self.note_for(size)
        return InclusionProof(seq, size, leaf, self.inclusion_path(seq, size), note)

    def consistency(self, old: int, new: int | None = None) -> ConsistencyProof:
        """RFC 9162 section 2.1.4: a consistency proof from the tree of ``old`` leaves to that
        of ``new`` (default: ``self.size``). Raises ``UsageError`` unless
        ``0 < old <= new <= self.size``."""
        head = self.size
        n = head if new is None else new
        if not (_is_size(old) and _is_size(n) and 0 < old <= n <= head):
            raise UsageError(f"no consistency proof from {old!r} to {n!r} (log: {head})")
        return ConsistencyProof(old, n, consistency_proof(old, n, self.hashes))

    def root_at(self, size: int) -> bytes | None:
        """The root of the tree of the first ``size`` leaves (``None``: the tree holds fewer)."""
        return tree_hash(size, self.hashes) if 0 <= size <= self.size else None

    def checkpoint_now(self, micros: int) -> str:
        """Sign a checkpoint of the whole tree now; return its note, or the newest note when
        it already covers the tree. Raises ``NotFound`` for an empty log, ``ForkError`` when
        the tree does not extend the last signed checkpoint."""
        note = self.sign_current(micros)
        if note is None:
            latest = self.checkpoints.latest()
            if latest is None:
                raise NotFound(f"the log at {self.root} is empty: nothing to sign")
            note = latest.note
        return note

    def close(self) -> None:
        """Write what is buffered and close the hash file."""
        self.flush()
        self.hashes.close()


def _is_size(value: object) -> bool:
    """Whether ``value`` is a tree size as proofs state it: an int, not a bool or a float."""
    return isinstance(value, int) and not isinstance(value, bool)
