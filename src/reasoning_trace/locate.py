"""The second reading of ``verify``: where the records differ from what was signed, and how
(SPEC section 4, "Verify": what a finding says and where).

The leaf pass (``leaf_pass``) says only which signed roots do not match. From the first record
not covered by a matching checkpoint to the end of the log, ``locate`` reads the day files
again, parses each line and tells what happened, with file, line and seq: ``altered``,
``inserted``, ``duplicate``, ``reordered`` or ``deleted`` records, ``unparseable`` lines, a
``missing_day_file``. Where the derived hash file is present, each record's leaf hash is
compared with the one stored when it was written, which pins an altered record exactly, and
tells an inserted line from the genuine one with its seq; without it a change is located to the
span between two checkpoints. The derived files are only read, never rebuilt, so evidence
survives. Memory: the seq ranges not seen yet and the suspect lines, not the records.
Tests: ``tests/test_verify.py`` (the tamper suite), ``tests/test_legacy.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import orjson

from .layout import Layout
from .legacy import Prefix, is_legacy_line
from .report import Finding, Report
from .tree import HashFile, leaf_hash, stored_hash_index

__all__ = ["locate"]


def locate(
    report: Report,
    base: Path,
    days: list[Path],
    prefix: Prefix,
    *,
    start: int,
    place: tuple[int, int],
    size: int,
) -> None:
    """Read the log at ``base`` again from record ``start`` and report what is wrong, and where.

    ``days``: the day files, in order; ``place``: (day file index, byte offset) where record
    ``start`` begins; ``size``: the records the leaf pass counted (nothing to read from there
    on); ``prefix``: the original module's lines at the log's start, whose place is their seq.
    """
    stored = _StoredLeaves(base)
    if start < size:  # else every record is covered by a matching checkpoint
        detail = _Detail(report, stored, start, prefix)
        d_index, offset = place
        if start:  # the day of the record just before the pass, for a gap right at it
            detail.last_day = days[d_index - 1 if offset == 0 else d_index].stem
        for path in days[d_index:]:
            file = str(path)
            for lineno, line in _lines(path, offset if path == days[d_index] else 0):
                detail.line(file, lineno, line)
        detail.finish({p.stem for p in days})
    if stored.file is not None:
        stored.file.close()


class _StoredLeaves:
    """Leaf hashes stored when records were written (derived; read only, may be absent)."""

    def __init__(self, root: Path) -> None:
        path = Layout(root).hashes
        self.file = HashFile(str(path), readonly=True) if path.is_file() else None
        self.leaves = self.file.leaves() if self.file else 0

    def get(self, seq: int) -> bytes | None:
        """The leaf hash stored for record ``seq``, or ``None`` if there is none."""
        if self.file is None or not 0 <= seq < self.leaves:
            return None
        return self.file.read_hashes([stored_hash_index(0, seq)])[0]


class _Detail:
    """The second pass over a span: parse each line and classify what is wrong."""

    def __init__(self, report: Report, stored: _StoredLeaves, start: int, prefix: Prefix) -> None:
        self.prefix = prefix
        self.report = report
        self.stored = stored
        self.expected = start
        self.missing: list[list[int]] = []  # [lo, hi] ranges of seqs not seen yet
        self.gap_days: dict[int, tuple[str, str]] = {}  # gap start -> (day before, day after)
        self.last_day = ""
        self.suspect: dict[int, tuple[str, int]] = {}  # seq -> place of a mismatching line
        self.found = 0

    def _take_missing(self, seq: int) -> bool:
        """Whether ``seq`` was missing so far (a seq seen late); it is not missing any more."""
        for r in self.missing:
            if r[0] <= seq <= r[1]:
                if r[0] == r[1]:
                    self.missing.remove(r)
                elif seq == r[0]:
                    r[0] += 1
                elif seq == r[1]:
                    r[1] -= 1
                else:
                    self.missing.append([seq + 1, r[1]])
                    r[1] = seq - 1
                return True
        return False

    def line(self, file: str, lineno: int, line: bytes) -> None:
        """Read the next line, at ``file``:``lineno``; report what is wrong with it."""
        add = self.report.add
        day = os.path.basename(file)[:10]
        if self.prefix.covers_line(day, lineno):  # the original module's: its place is its seq
            if not line:
                return  # a blank line: not a leaf
            seq = self.expected
            stored = self.stored.get(seq)
            if stored is not None and stored != leaf_hash(line):
                self.suspect[seq] = (file, lineno)
            self.expected += 1
            self.last_day = day
            return
        if b'"v":' not in line and is_legacy_line(line):
            return  # not a leaf (noted by the first pass)
        try:
            obj = orjson.loads(line)
            seq = obj["seq"]
            if type(seq) is not int:
                raise TypeError("seq is not an integer")
        except (ValueError, KeyError, TypeError) as exc:
            add(Finding("unparseable", f"{file}:{lineno}: not a record ({exc})", file, lineno))
            self.found += 1
            return
        stored = self.stored.get(seq)
        genuine = None if stored is None else stored == leaf_hash(line)
        day = str(obj.get("datetime_utc", ""))[:10]
        if seq == self.expected:
            self.expected += 1
            self.last_day = day
            if genuine is False:
                self.suspect[seq] = (file, lineno)
        elif seq > self.expected:
            self.missing.append([self.expected, seq - 1])
            self.gap_days[self.expected] = (self.last_day, day)
            self.expected = seq + 1
            if genuine is False:
                self.suspect[seq] = (file, lineno)
            self.last_day = day
        elif self._take_missing(seq):
            self.found += 1
            add(
                Finding(
                    "reordered",
                    f"{file}:{lineno}: seq {seq} comes after seq {self.expected - 1}",
                    file,
                    lineno,
                    seq,
                    seq,
                )
            )
        elif seq in self.suspect and genuine is True:
            # The earlier line with this seq was never written by the log: it was inserted.
            f0, l0 = self.suspect.pop(seq)
            self.found += 1
            add(
                Finding(
                    "inserted",
                    f"{f0}:{l0}: a line with seq {seq} that the log never "
                    f"wrote (the genuine one is at {file}:{lineno})",
                    f0,
                    l0,
                    seq,
                    seq,
                )
            )
        else:
            self.found += 1
            kind = "duplicate" if genuine is not False else "inserted"
            add(Finding(kind, f"{file}:{lineno}: seq {seq} appears again", file, lineno, seq, seq))

    def finish(self, day_files: set[str]) -> None:
        """Report what only the end tells: altered records, and seqs never seen (deleted, or
        in a day file that is gone: ``day_files`` names the days there are)."""
        for seq, (file, lineno) in sorted(self.suspect.items()):
            self.found += 1
            self.report.add(
                Finding(
                    "altered",
                    f"{file}:{lineno}: record seq {seq} differs from what was written and signed",
                    file,
                    lineno,
                    seq,
                    seq,
                )
            )
        for lo, hi in sorted(self.missing):
            self.found += 1
            before, after = self.gap_days.get(lo, ("", ""))
            gone = [d for d in _days_between(before, after) if d not in day_files]
            if gone:
                kind, extra = "missing_day_file", f"; no day file for {', '.join(gone)}"
            else:
                kind, extra = "deleted", ""
            self.report.add(Finding(kind, f"seq {lo}..{hi} missing{extra}", None, None, lo, hi))


def _days_between(before: str, after: str) -> list[str]:
    """The UTC days strictly between two ``YYYY-MM-DD`` days (none if either is unknown)."""
    try:
        a, b = date.fromisoformat(before), date.fromisoformat(after)
    except ValueError:
        return []
    return [(a + timedelta(days=i)).isoformat() for i in range(1, (b - a).days)]


def _lines(path: Path, start: int) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of complete lines from byte ``start`` (a line boundary)."""
    with open(path, "rb") as fh:
        lineno = fh.read(start).count(b"\n") if start else 0
        for raw in fh:
            if not raw.endswith(b"\n"):
                return
            lineno += 1
            yield lineno, raw[:-1]
