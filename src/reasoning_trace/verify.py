"""The local verifier, ``verify(root, vkey=..., trusted=..., now=...)`` (SPEC section 4, "Verify").

The log's checkpoints are read and each signature is checked, with
the auditor's verifier keys when given (``vkey``: whoever can edit the log can also replace
``checkpoints/vkey``); so are the checkpoints the auditor kept (``trusted``). The leaf pass
(``leaf_pass``) streams the day files once and gives the tree's root at each of those sizes. A
root that differs from the signed one, a log shorter than a checkpoint (``truncated``,
``rollback``), or another root at a kept size (``trusted_mismatch``) is a finding; from the
first record that no matching checkpoint covers, ``locate`` reads again to say what happened
and where. It fails closed: a folder that is no log fails (``not_a_log``, ``presence``), so
does a log holding fewer records than its writers stored (``acknowledged_missing``); with a
pinned key, a log (0 records too) and no checkpoint it verifies fails (``no_checkpoint``), and
so do records that a running writer would have signed by ``now`` but no checkpoint covers
(``unsigned_stale``).

Memory does not grow with the records: the tree's edge is O(log n) hashes; only checkpoints
and findings are kept (a ``report.Report``). A single proof needs no log (``proof_check``).
Tests: ``tests/test_verify.py`` (tampering), ``tests/test_auditor.py`` (pinned keys, kept
checkpoints, the schedule), ``tests/test_checkpoint.py``, ``tests/test_integrity_edges.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import Checkpoints, open_checkpoint
from .cosignature import CosignerKey
from .errors import LogRootMissing, NoteError, SignatureError, UnknownKey
from .layout import Layout, resolve_root
from .leaf_pass import LeafPass, hash_pass
from .legacy import Prefix, find_prefix
from .locate import locate
from .note import Verifier, as_verifiers
from .presence import check_head, is_a_log, not_a_log, read_head
from .record import parse_utc
from .report import Finding, Report
from .tree import EMPTY_ROOT
from .verify_witnessed import witness_findings
from .witness_policy import WitnessConfig, check_policy

__all__ = ["STALE_SECONDS", "verify"]


@dataclass
class _Signed:
    """A signed checkpoint to compare with the records: the log's, or one the auditor kept."""

    size: int
    root: bytes
    where: str  # file:line of its entry, or which kept checkpoint it is
    matched: bool | None = None  # whether the records' root at its size is its root


def _checkpoints(files: Checkpoints, verifiers: list[Verifier], report: Report) -> list[_Signed]:
    """Every checkpoint whose signature verifies, by size; failures become findings."""
    by_size: dict[int, _Signed] = {}
    for entry in files.entries_and_errors():
        if isinstance(entry, NoteError):
            report.add(Finding("bad_checkpoint", str(entry)))
            continue
        where = f"{entry.file}:{entry.line}"
        try:
            cp = open_checkpoint(entry.note, verifiers)
        except UnknownKey as exc:
            report.add(
                Finding("unknown_key", f"checkpoint at {where}: {exc}", entry.file, entry.line)
            )
            continue
        except SignatureError as exc:
            report.add(
                Finding("bad_signature", f"checkpoint at {where}: {exc}", entry.file, entry.line)
            )
            continue
        except NoteError as exc:
            report.add(
                Finding("bad_checkpoint", f"checkpoint at {where}: {exc}", entry.file, entry.line)
            )
            continue
        if (cp.size, cp.root) != (entry.size, entry.root):
            report.add(
                Finding(
                    "bad_checkpoint",
                    f"checkpoint at {where}: its size/root fields differ from the signed note "
                    f"(note: size {cp.size})",
                    entry.file,
                    entry.line,
                )
            )
        seen = by_size.get(cp.size)
        if seen is not None and seen.root != cp.root:
            report.add(
                Finding(
                    "fork",
                    f"two signed checkpoints of size {cp.size} with different roots: "
                    f"{seen.where} and {where}",
                    entry.file,
                    entry.line,
                    cp.size,
                )
            )
            continue
        by_size.setdefault(cp.size, _Signed(cp.size, cp.root, where))
    return sorted(by_size.values(), key=lambda s: s.size)


def _trusted(notes: Iterable[str], verifiers: list[Verifier], report: Report) -> list[_Signed]:
    """The checkpoints the auditor kept, each verified with their keys (else a finding)."""
    out = []
    for n, note in enumerate(notes, 1):
        try:
            cp = open_checkpoint(note, verifiers)
        except (NoteError, SignatureError) as exc:
            report.add(Finding("bad_checkpoint", f"the checkpoint you kept (#{n}): {exc}"))
            continue
        out.append(_Signed(cp.size, cp.root, f"kept checkpoint #{n}, size {cp.size}"))
    return out


def verify(
    root: str | os.PathLike[str] | None = None,
    vkey: str | Verifier | Iterable[str | Verifier] | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    trusted: Iterable[str] = (),
    now: float | None = None,
    keep: Callable[[LeafPass, Prefix], None] | None = None,
    witnesses: Iterable[CosignerKey | WitnessConfig] | None = None,
    quorum: int = 0,
) -> Report:
    """Verify the log at ``root`` against its signed checkpoints; see the module docstring.

    ``vkey``: the auditor's verifier key(s); default, the keys the log published. A pinned
    key fails closed: no checkpoint it verifies is a failure, even with 0 records. ``trusted``:
    checkpoint notes the auditor kept from before (signed by ``vkey``); the log fails if it
    is shorter than one (a rollback) or its tree at that size has another root (a fork).
    ``now`` (Unix seconds, default the clock): unsigned records older than a writer's signing
    schedule by then are a failure, not a fresh tail.
    ``witnesses`` and ``quorum``: a witness policy (``verify_witnessed``): records and no
    checkpoint that ``quorum`` of them cosigned fail; a witness's refusal always fails.
    ``progress(done_bytes, total_bytes)`` is called as the day files are read.
    ``workers``: processes hashing leaves, this one included (default: up to 4 over 64 MiB).
    ``keep(leaves, prefix)`` is handed the leaf pass (with where to carry on from the newest
    checkpoint) and the legacy prefix, for ``verify_incremental``.
    """
    keys = [w.key if isinstance(w, WitnessConfig) else w for w in witnesses or ()]
    if witnesses is not None:
        check_policy(keys, quorum)
    base = resolve_root(root)
    if not base.is_dir():
        raise LogRootMissing(f"no log at {base}: nothing to verify")
    report = Report(str(base))
    layout = Layout(base)
    if not is_a_log(layout):
        report.add(not_a_log(layout))
        return report
    acknowledged = read_head(layout)  # before the day files are read (``presence``)
    log_checkpoints = Checkpoints(base)
    verifiers = as_verifiers(vkey)
    if verifiers is None:
        verifiers = log_checkpoints.verifiers()
    signed = _checkpoints(log_checkpoints, verifiers, report)
    kept = _trusted(trusted, verifiers, report)
    for path, offset, length in log_checkpoints.torn():
        report.add(
            Finding(
                "torn_tail",
                f"{path}: {length} bytes after the last newline at byte {offset} (a checkpoint "
                "write interrupted by a crash; the next writer moves them to quarantine/)",
                str(path),
            )
        )
    if not verifiers and log_checkpoints.files():
        report.add(
            Finding(
                "no_key",
                "the log has checkpoints but no verifier key to check them (give one with vkey=)",
            )
        )
    for odd in [p for p in layout.named_like_days() if p.is_symlink() or not p.is_file()]:
        report.add(
            Finding(
                "odd_entry",
                f"{odd}: named like a day file but not a regular file (a "
                f"{'link' if odd.is_symlink() else 'directory or device'}); not read",
                str(odd),
            )
        )
    day_names = layout.days()
    days = [layout.day_file(day) for day in day_names]

    # Pass 1: hash every line, compare roots at the signed sizes.
    prefix = find_prefix(str(base), day_names)
    if prefix.leaves:
        report.add(
            Finding(
                "legacy",
                f"seq 0..{prefix.leaves - 1}: {prefix.parsed} records written by the original "
                "module (and any lines of its that do not parse), kept as they are and covered "
                "by the tree from their adoption on",
                None,
                None,
                0,
                prefix.leaves - 1,
            )
        )
    for day, lineno in prefix.unparseable:
        file = layout.day_file_s(day)
        report.add(
            Finding(
                "legacy_unparseable",
                f"{file}:{lineno}: a line of the original module that is not a record (torn or "
                "interleaved by its concurrent writers); kept as it is, a leaf of the tree",
                file,
                lineno,
            )
        )
    targets = [*signed, *kept]
    leaves = hash_pass(
        days, [t.size for t in targets], prefix, report, progress=progress, workers=workers
    )
    if keep is not None:
        keep(leaves, prefix)
    for t in targets:  # sizes the log does not reach, and size 0, stay None
        if t.size in leaves.roots:
            t.matched = leaves.roots[t.size] == t.root
    size, done, places = leaves.records, leaves.nbytes, leaves.places
    for k in kept:
        if k.size > size:
            report.add(
                Finding(
                    "rollback",
                    f"the log has {size} records, fewer than the {k.size} of the checkpoint you "
                    f"kept ({k.where}): records were removed after it was signed",
                    None,
                    None,
                    size,
                    k.size - 1,
                )
            )
        elif not (k.matched or (k.size == 0 and k.root == EMPTY_ROOT)):
            report.add(
                Finding(
                    "trusted_mismatch",
                    f"the log's first {k.size} records do not hash to the root of the checkpoint "
                    f"you kept ({k.where}): its signed history was rewritten",
                    None,
                    None,
                    0,
                    k.size - 1,
                )
            )
    report.records, report.bytes = size, done
    if size == 0 and any(s.size == 0 for s in signed):
        for s in signed:
            if s.size == 0:
                s.matched = s.root == EMPTY_ROOT

    # Which spans need a closer look.
    spans: list[tuple[int, int]] = []
    good = 0
    for s in signed:
        if s.size > size:
            report.add(
                Finding(
                    "truncated",
                    f"the log has {size} records, but a checkpoint ({s.where}) signed {s.size}",
                    None,
                    None,
                    size,
                    s.size - 1,
                )
            )
            continue
        if s.matched:
            report.checkpoints += 1
            good = max(good, s.size)
        else:
            report.add(
                Finding(
                    "checkpoint_mismatch",
                    f"records before seq {s.size} do not hash "
                    f"to the root signed at {s.where}; the change is in seq "
                    f"{good}..{s.size - 1}",
                    None,
                    None,
                    good,
                    s.size - 1,
                )
            )
            spans.append((good, s.size))
    report.signed_size = good
    check_head(layout, acknowledged, size, report)
    newest = max((s.size for s in signed), default=0)
    if vkey is not None and not report.checkpoints:
        report.add(
            Finding(
                "no_checkpoint",
                f"{size} records and not one checkpoint that the verifier key you gave "
                f"verifies: nothing here is proven (were {'' if size else 'records and '}"
                "checkpoints deleted?)",
                None,
                None,
                0 if size else None,
                size - 1 if size else None,
            )
        )
    stale = _stale_unsigned(days, places, newest, size)
    if not stale and size > newest:
        stale = _old_unsigned(days[-1] if days else None, time.time() if now is None else now)
    if stale:
        report.add(
            Finding(
                "unsigned_stale",
                f"seq {newest}..{size - 1}: not covered by a signed checkpoint although a "
                f"writer would have signed them by now ({stale} is past its signing schedule: "
                "a writer signs when a UTC day ends, every few minutes while the log grows and "
                "on close); their checkpoint is missing, or the writer died and nobody signed "
                "since (`rtrace checkpoint --now` signs what is there)",
                None,
                None,
                newest,
                size - 1,
            )
        )
    elif size > newest:
        report.add(
            Finding(
                "unsigned",
                f"seq {newest}..{size - 1}: not yet covered by a signed checkpoint",
                None,
                None,
                newest,
                size - 1,
            )
        )
    spans.append((good, size))
    matched = [s.size for s in signed if s.matched]
    witness_findings(base, verifiers, matched, report, keys, quorum)

    # Pass 2: parse and classify from the first suspect record to the end. Every root covers
    # all records before it, so after the first mismatch nothing later can match.
    start = max(k for k in places if k <= min(lo for lo, _ in spans))
    locate(report, base, days, prefix, start=start, place=places[start], size=size)

    quarantine = layout.quarantine
    if quarantine.is_dir():
        for fragment in sorted(quarantine.iterdir()):
            report.add(
                Finding(
                    "crash_fragment",
                    f"{fragment}: {fragment.stat().st_size} bytes "
                    "cut from a torn write after a crash (never acknowledged)",
                    str(fragment),
                )
            )
    return report


#: Unsigned records older than this (seconds) were due a checkpoint: a running writer signs
#: every CHECKPOINT_SECONDS while the log grows and on close.
STALE_SECONDS = 5 * 60


def _old_unsigned(last_file: Path | None, now: float) -> str | None:
    """The instant of the log's last record, if it is older than ``STALE_SECONDS``."""
    if last_file is None:
        return None
    with open(last_file, "rb") as fh:
        fh.seek(max(0, last_file.stat().st_size - 65536))
        tail = fh.read().split(b"\n")
    for line in reversed(tail):
        i = line.find(b'"datetime_utc":"')
        if i >= 0:
            when = line[i + 16 : i + 43].decode(errors="replace")
            try:
                age = now - parse_utc(when) / 1e6
            except ValueError:
                return None
            return f"the last record, {when}" if age > STALE_SECONDS else None
    return None


def _stale_unsigned(
    days: list[Path], places: dict[int, tuple[int, int]], newest: int, size: int
) -> str | None:
    """The later day, if unsigned records (after the newest checkpoint) belong to a UTC day
    that ended before the log's last record: a writer would have signed them at that day's
    end (whatever its other signing settings)."""
    if size <= newest or newest not in places:
        return None
    d_index, offset = places[newest]
    while d_index < len(days) and offset >= days[d_index].stat().st_size:
        d_index, offset = d_index + 1, 0  # the next unsigned record starts in a later file
    last = max((i for i, p in enumerate(days) if p.stat().st_size), default=-1)
    return f"a later day, {days[last].stem}, follows" if d_index < last else None
