"""Verification that keeps up with a growing log: ``IncrementalVerifier`` (SPEC section 4).

A full pass (``verify.verify``) reads every record: too slow to run every few seconds on a
big log. This verifier carries on from what a full pass proved:

- **Baseline.** After a full pass that found nothing wrong: the newest matching checkpoint
  (size ``S``), the tree's right edge at ``S`` as the pass computed it from the records
  (``leaf_pass.Resume``, O(log n) hashes; its root is the signed root) and where leaf ``S``
  starts (day file, byte offset).
- **Incremental check.** Reads only the checkpoints signed since (on from where it stopped
  in each checkpoint file, each signature checked) and the records from leaf ``S`` on, folds
  them into the edge (RFC 9162 section 2.1.1, as ``leaf_pass.hash_pass`` does) and compares
  the root at each new checkpoint's size with the signed one. All match: the newest becomes
  the baseline. One does not: ``locate`` says which record changed and where, as a full pass
  would. Records after the newest checkpoint are read again until one covers them.
- **Full pass.** Records before ``S`` are not read again, so an edit of a verified record is
  found by the next full pass: the first check, then every ``full_every`` seconds, and at
  once when a tripwire (``tripwire.Snapshot``) says the files did not only grow.
- **After a failure** each check is a full pass again (at most one every ``retry_every``
  seconds): a repair passes, a new edit is reported, ``records`` counts the log as it is.

Each ``Check`` says which kind it was, from which seq it read, and when the last full pass
ran. Reading only: nothing is written, so a read-only log verifies. The right-edge fold
follows transparency-dev/merkle's ``compact.Range``, as ``leaf_pass`` does; ``verify_watch``
shares one of these verifiers between the processes of a server.
Tests: ``tests/test_verify_incremental.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from .checkpoint import Checkpoints, Entry, open_checkpoint
from .errors import NoteError, SignatureError, UnknownKey
from .layout import Layout, resolve_root
from .leaf_pass import LeafPass, Resume, hash_pass
from .legacy import Prefix
from .locate import locate
from .note import Verifier, as_verifiers
from .record import parse_utc
from .report import Finding, Report
from .tree import Hash
from .tripwire import Snapshot
from .verify import STALE_SECONDS, verify

__all__ = ["Check", "IncrementalVerifier"]

Mode = Literal["full", "incremental"]
#: Notes of a full pass that an incremental check says afresh, not carried over.
_RESAID = ("unsigned", "torn_tail", "clock_backwards", "wrong_day")


@dataclass(frozen=True)
class Check:
    """What one check found and what it covered.

    ``mode``: a ``full`` pass read every record, an ``incremental`` check those from seq
    ``checked_from`` on; ``reason`` says why a full pass ran. ``signed_size``: records the
    newest matching checkpoint covers; ``checkpoint``: the newest checkpoint whose signature
    verified (it matches the records unless the check failed), for a reader's own proof
    check. ``full_at``/``full_ok``: when the last full pass began and whether it passed.
    """

    mode: Mode
    reason: str
    started: float
    seconds: float
    records: int
    checked_from: int
    signed_size: int
    checkpoints: int
    checkpoint: Entry | None
    findings: list[Finding]
    full_at: float
    full_ok: bool

    @property
    def ok(self) -> bool:
        """True when nothing was found that means the log is not what was signed."""
        return not any(f.failure for f in self.findings)

    def to_json(self, max_findings: int = 50) -> dict[str, Any]:
        """The check as a JSON object (the shape of ``GET /v1/verify``)."""
        cp = self.checkpoint
        failures = [f for f in self.findings if f.failure]
        shown = (failures + [f for f in self.findings if not f.failure])[:max_findings]
        keys = ("size", "datetime_utc", "note")
        signed = {k: getattr(cp, k) for k in keys} | {"root": str(Hash(cp.root))} if cp else None
        return {
            "status": "ok" if self.ok else "failed",
            "ok": self.ok,
            "mode": self.mode,
            "reason": self.reason,
            "ran_at": self.started,
            "seconds": round(self.seconds, 3),
            "records": self.records,
            "checked_from": self.checked_from,
            "signed_size": self.signed_size,
            "checkpoints": self.checkpoints,
            "checkpoint": signed,
            "failures": len(failures),
            "findings": [f.to_json() for f in shown],
            "full": {"ran_at": self.full_at, "ok": self.full_ok},
        }


@dataclass
class _State:
    """What the last passing check proved, to carry on from."""

    at: Resume  # the tree's edge at the newest matching checkpoint and where the next leaf is
    checkpoint: Entry | None  # that checkpoint (None at size 0)
    prefix: Prefix
    read: dict[str, tuple[int, int]]  # checkpoint file name -> (bytes, lines) read
    count: int  # matching checkpoints so far
    notes: list[Finding] = field(default_factory=list)  # the last full pass's lasting notes


class IncrementalVerifier:
    """Keeps the log at ``root`` verified as it grows; see the module docstring.

    ``vkey``: the auditor's verifier keys (default: the keys the log published, read again
    when they change). ``full_every``: seconds between full passes. ``retry_every``: after a
    failure, seconds between full passes (0: at every check). ``clock``: Unix seconds.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        vkey: str | Verifier | Iterable[str | Verifier] | None = None,
        *,
        full_every: float = 600.0,
        retry_every: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = resolve_root(root)
        self.layout = Layout(self.root)
        self.vkey = as_verifiers(vkey)
        self.full_every, self.retry_every = full_every, retry_every
        self.clock = clock
        self.last: Check | None = None
        self.full_passes = 0
        self._state: _State | None = None
        self._snapshot: Snapshot | None = None
        self._full_at = 0.0

    def check(self, progress: Callable[[int, int], None] | None = None) -> Check:
        """A full pass when one is due (the first check, ``full_every`` elapsed, a tripwire),
        else an incremental check; after a failure, a full pass once ``retry_every`` passed."""
        now = self.clock()
        if self.last is None:
            return self.full("the first check", progress)
        if now - self._full_at >= self.full_every:
            return self.full("scheduled", progress)
        snapshot = Snapshot.take(self.layout)
        tripped = snapshot.changed_since(self._snapshot) if self._snapshot else "no snapshot"
        if tripped:
            return self.full(tripped, progress, snapshot)
        if self._state is None:  # failed: no baseline; the log may have been repaired
            if now - self.last.started >= self.retry_every:
                return self.full("the last check failed", progress, snapshot)
            return self.last
        return self._incremental(now, snapshot, progress)

    def full(
        self,
        reason: str = "asked for",
        progress: Callable[[int, int], None] | None = None,
        snapshot: Snapshot | None = None,
    ) -> Check:
        """A full pass (``verify.verify``); when it passes, the baseline for what follows."""
        started = self.clock()
        snapshot = snapshot or Snapshot.take(self.layout)
        read = self._read_marks(snapshot)
        kept: list[tuple[LeafPass, Prefix]] = []
        report = verify(
            self.root,
            self.vkey,
            progress=progress,
            now=started,
            keep=lambda leaves, prefix: kept.append((leaves, prefix)),
        )
        self.full_passes += 1
        self._snapshot, self._full_at = snapshot, started
        self._state = None
        entry = self._signed_entry(report.signed_size if report.ok else None)
        if report.ok and kept:
            leaves, prefix = kept[0]
            first = self.layout.days()[:1]
            at = leaves.resume_at or Resume(0, (), first[0] if first else "", 0, 0)
            if at.size == report.signed_size and (entry is None or at.root() == entry.root):
                notes = [f for f in report.findings if f.kind not in _RESAID]
                self._state = _State(at, entry, prefix, read, report.checkpoints, notes)
        self.last = Check(
            "full",
            reason,
            started,
            self.clock() - started,
            report.records,
            0,
            report.signed_size,
            report.checkpoints,
            entry,
            report.findings,
            started,
            report.ok,
        )
        return self.last

    def _incremental(
        self, started: float, snapshot: Snapshot, progress: Callable[[int, int], None] | None
    ) -> Check:
        """Read what is new since the baseline; compare roots at the new checkpoints."""
        state = self._state
        assert state is not None and self.last is not None
        report = Report(str(self.root))
        signed = self._new_checkpoints(state, snapshot, report)
        if signed is None:
            return self.full("a checkpoint of an earlier size was signed", progress, snapshot)
        base = state.at
        all_days = self.layout.days()
        days = [self.layout.day_file(d) for d in all_days if d >= base.day]
        leaves = hash_pass(
            days, list(signed), state.prefix, report, progress=progress, workers=1, resume=base
        )
        newest, good = state.checkpoint, base
        for size in sorted(signed):
            entry, newest = signed[size], signed[size]
            where = f"{entry.file}:{entry.line}"
            if size > leaves.records:
                report.add(
                    Finding(
                        "truncated",
                        f"the log has {leaves.records} records, but a checkpoint ({where}) "
                        f"signed {size}",
                        seq_from=leaves.records,
                        seq_to=size - 1,
                    )
                )
            elif leaves.roots[size] != entry.root:
                why = f"records before seq {size} do not hash to the root signed at {where}"
                report.add(
                    Finding(
                        "checkpoint_mismatch",
                        f"{why}; the change is in seq {good.size}..{size - 1}",
                        seq_from=good.size,
                        seq_to=size - 1,
                    )
                )
        matched = report.ok and leaves.resume_at is not None and bool(signed)
        if not report.ok:
            index = all_days.index(base.day) if base.day in all_days else 0
            locate(
                report,
                self.root,
                [self.layout.day_file(d) for d in all_days],
                state.prefix,
                start=base.size,
                place=(index, base.offset),
                size=leaves.records,
            )
        elif matched and leaves.resume_at is not None:
            good = leaves.resume_at
            state.at, state.checkpoint = good, signed[good.size]
            state.count += len(signed)
        self._unsigned(report, max([good.size, *signed]), leaves, started)
        self._snapshot = snapshot
        if not report.ok:
            self._state = None
        findings = [*state.notes, *(f for f in report.findings if f not in state.notes)]
        self.last = Check(
            "incremental",
            f"records from seq {base.size} and checkpoints signed since",
            started,
            self.clock() - started,
            leaves.records,
            base.size,
            good.size,
            state.count,
            newest if not report.ok else state.checkpoint,
            findings,
            self._full_at,
            self.last.full_ok,
        )
        return self.last

    def _verifiers(self) -> list[Verifier]:
        """The keys checkpoints are checked with (default: the ones the log published)."""
        return Checkpoints(self.root).verifiers() if self.vkey is None else self.vkey

    def _new_checkpoints(
        self, state: _State, snapshot: Snapshot, report: Report
    ) -> dict[int, Entry] | None:
        """Checkpoints signed since the last check, by size, each signature checked (failures
        are findings); ``None`` if one is for a size at or below the baseline's but not its."""
        files = Checkpoints(self.root)
        verifiers = self._verifiers()
        out: dict[int, Entry] = {}
        for name in sorted(snapshot.checkpoints):
            start, lines = state.read.get(name, (0, 0))
            path = self.layout.checkpoints / name
            for end, item in files.file_entries(path, start, lines):
                if end > snapshot.checkpoints[name].size:
                    break  # written after the snapshot: the next check reads it
                start, lines = end, lines + 1
                entry = _opened(item, verifiers, report)
                if entry is None:
                    continue
                base = state.checkpoint
                if entry.size <= state.at.size:
                    if base is None or (entry.size, entry.root) != (base.size, base.root):
                        return None
                    continue
                seen = out.get(entry.size)
                if seen is not None and seen.root != entry.root:
                    report.add(
                        Finding(
                            "fork",
                            f"two signed checkpoints of size {entry.size} with different "
                            f"roots: {seen.file}:{seen.line} and {entry.file}:{entry.line}",
                            entry.file,
                            entry.line,
                            entry.size,
                        )
                    )
                out.setdefault(entry.size, entry)
            state.read[name] = (start, lines)
        return out

    def _read_marks(self, snapshot: Snapshot) -> dict[str, tuple[int, int]]:
        """(bytes, lines) of each checkpoint file's whole lines as of ``snapshot``: what a full
        pass begun now reads at least."""
        read = {}
        for name, mark in snapshot.checkpoints.items():
            start = lines = 0
            for end, _ in Checkpoints(self.root).file_entries(self.layout.checkpoints / name):
                if end > mark.size:
                    break
                start, lines = end, lines + 1
            read[name] = (start, lines)
        return read

    def _signed_entry(self, size: int | None) -> Entry | None:
        """The newest checkpoint of ``size`` (``None``: of any size) whose signature verifies."""
        verifiers = self._verifiers()
        scratch = Report(str(self.root))
        files = Checkpoints(self.root)
        for path in reversed(files.files()):
            for _, item in reversed(list(files.file_entries(path))):
                if isinstance(item, Entry) and (size is None or item.size == size):
                    entry = _opened(item, verifiers, scratch)
                    if entry is not None:
                        return entry
        return None

    def _unsigned(self, report: Report, signed: int, leaves: LeafPass, now: float) -> None:
        """Note the records no checkpoint covers yet: a failure once a writer would have
        signed them (the last one older than ``STALE_SECONDS``), as ``verify`` says."""
        size = leaves.records
        if size <= signed:
            return
        try:
            stale = bool(leaves.last_dt) and (
                now - parse_utc(leaves.last_dt.decode()) / 1e6 > STALE_SECONDS
            )
        except (ValueError, UnicodeDecodeError):
            stale = False
        why = " although a writer would have signed them by now" if stale else ""
        report.add(
            Finding(
                "unsigned_stale" if stale else "unsigned",
                f"seq {signed}..{size - 1}: not yet covered by a signed checkpoint{why}",
                seq_from=signed,
                seq_to=size - 1,
            )
        )


def _opened(item: Entry | NoteError, verifiers: list[Verifier], report: Report) -> Entry | None:
    """The entry if its note's signature verifies and agrees with it; else a finding."""
    if isinstance(item, NoteError):
        report.add(Finding("bad_checkpoint", str(item)))
        return None
    where = f"checkpoint at {item.file}:{item.line}"
    try:
        cp = open_checkpoint(item.note, verifiers)
    except (SignatureError, NoteError) as exc:  # as ``verify`` names them
        kind = "bad_checkpoint" if isinstance(exc, NoteError) else "bad_signature"
        kind = "unknown_key" if isinstance(exc, UnknownKey) else kind
        report.add(Finding(kind, f"{where}: {exc}", item.file, item.line))
        return None
    if (cp.size, cp.root) != (item.size, item.root):
        why = "its size/root fields differ from the signed note"
        report.add(Finding("bad_checkpoint", f"{where}: {why}", item.file, item.line))
        return None
    return item
