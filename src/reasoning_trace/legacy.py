"""Records the original module wrote: *legacy records* (``v: 0`` in the docs; SPEC section 1).

The original module appended ``json.dumps(entry, sort_keys=True)`` lines with seven fields
(``timestamp``, ``datetime_utc``, ``action``, ``approved``, ``votes``, ``subject``,
``reason``) and no ``v``, ``seq`` or ``id``, with no process lock and two clock reads per record.
A log upgraded in place starts with such lines: the *legacy prefix*, every line before the
first record this product wrote, in file order (day files sorted by name, lines in file order).

- Each line of the prefix is a leaf of the tree, in file order, so its ``seq`` is its position;
  the first writer *adopts* the prefix (hashes it, signs a checkpoint of it) before its own
  first record, whose seq follows the prefix. The bytes are never rewritten.
- A prefix line that parses is read as a ``Decision`` with ``v == 0``, its original fields, its
  position as ``seq``, and a stable derived id ``legacy-<seq>-<12 hex of SHA-256(line)>``;
  unknown fields are kept. A prefix line that does not parse (torn or interleaved by the
  original's concurrent writers) stays where it is, a leaf like any other, and is reported as a
  note, never a failure: it predates the log's integrity.
- A line of the original's shape *after* the prefix was appended by an original module still
  running beside the new one (a rolling upgrade). It is not a leaf: readers skip it, ``verify``
  notes it, and a writer that finds such lines at the end of a day file takes them in: it
  records their content as new records that say where they came from (``legacy_source``: file,
  byte offset, SHA-256 of the line). Their bytes stay in place: the original module takes no
  lock, so cutting them out could cut a line it is writing at that instant.

Tests: ``tests/test_legacy.py``.
"""

from __future__ import annotations

import json
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .layout import Layout, lines
from .record import Decision

__all__ = [
    "Prefix",
    "find_prefix",
    "is_legacy",
    "is_legacy_line",
    "legacy_decision",
    "legacy_id",
    "load",
    "read_line",
]

SEED_FIELDS = ("timestamp", "datetime_utc", "action", "approved", "votes", "subject", "reason")


def is_legacy(obj: Any) -> bool:
    """Whether a parsed line has the original module's shape (its fields, no ``v``)."""
    return (
        isinstance(obj, dict)
        and "v" not in obj
        and "action" in obj
        and "approved" in obj
        and "timestamp" in obj
    )


def is_legacy_line(line: bytes) -> bool:
    """Whether a stored line has the original module's shape."""
    return is_legacy(load(line))


def legacy_decision(obj: Any, line: bytes, seq: int) -> Decision:
    """The ``Decision`` of a legacy line at position ``seq``; ``ValueError`` if it is not one."""
    if not is_legacy(obj):
        raise ValueError("not a record of the original module")
    ts, when, action = obj["timestamp"], obj.get("datetime_utc", ""), obj["action"]
    approved, votes, subject = obj["approved"], obj.get("votes", {}), obj.get("subject", {})
    reason = obj.get("reason", "")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise ValueError("legacy timestamp is not a number")
    if not (isinstance(when, str) and isinstance(action, str) and isinstance(approved, bool)):
        raise ValueError("legacy datetime_utc, action or approved has the wrong type")
    if not (isinstance(votes, dict) and isinstance(subject, dict) and isinstance(reason, str)):
        raise ValueError("legacy votes, subject or reason has the wrong type")
    extra = {k: v for k, v in obj.items() if k not in SEED_FIELDS}
    return Decision(
        seq=seq,
        id=legacy_id(seq, line),
        timestamp=float(ts),
        datetime_utc=when,
        action=action,
        approved=approved,
        votes=votes,
        subject=subject,
        reason=reason,
        v=0,  # the original module's format, before version 1
        extra=extra,
        line=line,
    )


def legacy_id(seq: int, line: bytes) -> str:
    """The stable id of the legacy prefix line ``line`` at position ``seq`` (parsed or not)."""
    import hashlib  # only for a log the original module wrote

    return f"legacy-{seq}-{hashlib.sha256(line).hexdigest()[:12]}"


def read_line(line: bytes, seq: int) -> Decision:
    """A stored line as a ``Decision``: a record, or a legacy record at position ``seq``.

    Raises ``ValueError`` for a line that is neither.
    """
    from .record import decision_from_dict

    obj = load(line)
    if isinstance(obj, dict) and "v" not in obj:
        return legacy_decision(obj, line, seq)
    return decision_from_dict(obj, line)


@dataclass
class Prefix:
    """Where a log's legacy prefix lies.

    ``leaves``: lines in the prefix (their seqs are 0..leaves-1). ``end``: (day, byte offset)
    of the first record this product wrote, ``None`` while there is none. ``starts``: for each
    day file of the prefix, the seq of its first line. ``unparseable``: (day, line number) of
    prefix lines that are not records. ``parsed``: how many prefix lines are legacy records.
    """

    leaves: int = 0
    end: tuple[str, int] | None = None
    end_line: int = 0  # line number (1-based) of the first record in its day file
    starts: dict[str, int] = field(default_factory=dict)
    unparseable: list[tuple[str, int]] = field(default_factory=list)
    parsed: int = 0
    off_day: list[tuple[str, int]] = field(default_factory=list)  # datetime_utc of another day
    days: list[str] = field(default_factory=list)  # the day files of the prefix, in order
    day_of: array[int] = field(default_factory=lambda: array("H"))  # seq -> index in days
    offset_of: array[int] = field(default_factory=lambda: array("Q"))  # seq -> byte offset

    def place(self, seq: int) -> tuple[str, int] | None:
        """(day, byte offset) of the prefix line ``seq``, or ``None`` beyond the prefix."""
        if not 0 <= seq < self.leaves:
            return None
        return self.days[self.day_of[seq]], self.offset_of[seq]

    def counts(self) -> dict[str, int]:
        """How many prefix lines each day file holds."""
        if not self.leaves:
            return {}
        days = sorted(self.starts)
        ends = [*(self.starts[d] for d in days[1:]), self.leaves]
        return {
            d: end - self.starts[d]
            for d, end in zip(days, ends, strict=True)
            if end > self.starts[d]
        }

    def covers(self, day: str, offset: int) -> bool:
        """Whether the line at (day, offset) is in the prefix."""
        if not self.leaves:
            return False
        if self.end is None:
            return True
        return (day, offset) < self.end

    def covers_line(self, day: str, lineno: int) -> bool:
        """Whether line ``lineno`` (1-based) of ``day``'s file is in the prefix."""
        if not self.leaves:
            return False
        if self.end is None:
            return True
        return (day, lineno) < (self.end[0], self.end_line)

    def frozen(self) -> bool:
        """Whether the prefix can no longer change (a record of this product follows it)."""
        return self.end is not None


def load(line: bytes) -> Any:
    """A line parsed as JSON, as the original module's own ``json`` would (it wrote ``NaN``
    and ``Infinity`` for such floats); ``None`` when it is not JSON."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(line)
    except ValueError:
        return None


def find_prefix(root: str, days: list[str]) -> Prefix:
    """The legacy prefix of the log at ``root`` whose day files are ``days`` (sorted).

    Reads the first line only for a log that has none (the usual case). Once this product
    wrote a record, the prefix is the first ``seq`` lines of the original module before it
    (that record's seq says how many the writer adopted): lines the original appended later,
    even before that record in file order, are not in it. A prefix counts only if it holds at
    least one legacy record and no more lines than that seq; otherwise the log has no legacy
    prefix and odd lines at its start are what they look like (corrupt).
    """
    seen: list[tuple[str, int, int, bool, bool]] = []  # day, offset, lineno, parsed, off day
    starts: dict[str, int] = {}
    layout = Layout(Path(root))
    for day in days:
        starts[day] = len(seen)
        for offset, numbered, line in lines(layout.day_file_s(day)):
            lineno = numbered or 0  # always known: read from the start
            obj = load(line)
            if isinstance(obj, dict) and "v" in obj:
                adopted = obj.get("seq")
                if type(adopted) is not int or adopted > len(seen):
                    return Prefix(end=(days[0], 0))
                stop = seen[adopted] if adopted < len(seen) else (day, offset, lineno, 0, 0)
                return _prefix(seen[:adopted], starts, (stop[0], stop[1]), stop[2])
            try:
                record = legacy_decision(obj, line, len(seen))
                seen.append((day, offset, lineno, True, not record.datetime_utc.startswith(day)))
            except ValueError:
                seen.append((day, offset, lineno, False, False))
    return _prefix(seen, starts, None, 0)


def _prefix(
    seen: list[tuple[str, int, int, bool, bool]],
    starts: dict[str, int],
    end: tuple[str, int] | None,
    end_line: int,
) -> Prefix:
    parsed = sum(1 for entry in seen if entry[3])
    if not parsed:
        return Prefix(end=end if end is None else (min(starts), 0))
    days = sorted({entry[0] for entry in seen})
    index = {d: i for i, d in enumerate(days)}
    return Prefix(
        days=days,
        day_of=array("H", (index[entry[0]] for entry in seen)),
        offset_of=array("Q", (entry[1] for entry in seen)),
        leaves=len(seen),
        end=end,
        end_line=end_line,
        starts={d: n for d, n in starts.items() if n < len(seen) or d == seen[-1][0]},
        unparseable=[(d, n) for d, _, n, ok, _ in seen if not ok],
        parsed=parsed,
        off_day=[(d, n) for d, _, n, ok, off in seen if ok and off],
    )
