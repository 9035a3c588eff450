"""Reading a log's day files: records by day, newest first, by time range, as tree leaves.

Readers take no lock and never write. They read only complete lines: bytes after the last
newline (a line being written, or a torn tail a crash left) are not a record yet. Lines the
original module wrote are read through the legacy prefix (``legacy``): before this product's
first record they are records whose seq is their position; after it they are passed over
(``verify`` notes them). A line that is neither raises ``CorruptLine`` with its place; one
record is still found at its place past it (``find_at_place``).
Tests: ``tests/test_files.py``, ``tests/test_legacy.py``, ``tests/test_query.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterator

import orjson

from .errors import CorruptLine
from .layout import CHUNK, Layout, lines, lines_backward
from .legacy import Prefix, find_prefix, is_legacy_line, read_line
from .record import Decision, decision_from_dict, parse_record

__all__ = ["DayFiles", "Locate"]

#: Where a record's line is: ``locate(seq)`` -> (day, offset, length), or ``None``.
Locate = Callable[[int], "tuple[str, int, int] | None"]


class DayFiles:
    """The day files of the log laid out as ``layout``, read as records."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.root = layout.root
        self._prefix: Prefix | None = None  # the legacy prefix, once it can no longer change
        self._growing: tuple[tuple[tuple[str, int, int], ...], Prefix] | None = None  # before

    def days(self) -> list[str]:
        """The days that have a day file, oldest first (``Layout.days``)."""
        return self.layout.days()

    def lines(self, day: str, start: int = 0) -> Iterator[tuple[int, int | None, bytes]]:
        """Complete lines of ``day``'s file from byte ``start`` (``layout.lines``)."""
        return lines(self.layout.day_file_s(day), start)

    def lines_backward(self, day: str) -> Iterator[tuple[int, bytes]]:
        """Complete lines of ``day``'s file, last first (``layout.lines_backward``)."""
        return lines_backward(self.layout.day_file_s(day))

    def legacy_prefix(self) -> Prefix:
        """The lines the original module wrote before this product's first record (see
        ``legacy``); cached once a record of this product follows them."""
        if self._prefix is not None:
            return self._prefix
        days = self.days()
        # Until then (a log only the original module wrote) it can grow: read it again only
        # when a day file changed, not on every read of every day.
        shape = tuple((day, *_size_ino(self.layout.day_file_s(day))) for day in days)
        if self._growing is not None and self._growing[0] == shape:
            return self._growing[1]
        prefix = find_prefix(self.layout.root_s, days)
        if prefix.frozen():
            self._prefix, self._growing = prefix, None
        else:
            self._growing = (shape, prefix)
        return prefix

    def decisions(self, day: str, start: int = 0) -> Iterator[Decision]:
        """Parsed records of one day file from byte ``start``; a corrupt line raises.

        The scan loop of every query, kept flat: read 1 MiB, split, parse, build.
        """
        prefix = self.legacy_prefix()
        if prefix.leaves and (prefix.end is None or day <= prefix.end[0]):
            yield from self._prefix_decisions(day, start, prefix)
            return
        path = self.layout.day_file_s(day)
        try:
            fh = open(path, "rb", buffering=0)  # noqa: SIM115 -- closed by the with below
        except FileNotFoundError:
            return
        loads, build = orjson.loads, decision_from_dict
        with fh:
            fh.seek(start)
            offset, carry = start, b""  # offset: where ``carry + block`` starts in the file
            while block := fh.read(CHUNK):
                data = carry + block
                parts = data.split(b"\n")
                carry = parts.pop()
                for line in parts:
                    if line:
                        try:
                            yield build(loads(line), line)
                        except ValueError as exc:
                            if is_legacy_line(line):
                                continue  # the original module's line after adoption: no seq
                            at = offset + data.index(line + b"\n")
                            raise self._corrupt(day, start, at, exc) from exc
                offset += len(data) - len(carry)

    def _prefix_decisions(self, day: str, start: int, prefix: Prefix) -> Iterator[Decision]:
        """The decisions of a day file that holds legacy prefix lines, from byte ``start``:
        legacy records with their position as seq; unparseable legacy lines are skipped (they
        are leaves, and ``verify`` notes them)."""
        seq = prefix.starts.get(day, prefix.leaves)
        for offset, _lineno, line in self.lines(day):
            if prefix.covers(day, offset):
                if offset >= start:
                    with contextlib.suppress(ValueError):
                        yield read_line(line, seq)
                seq += 1
            elif offset >= start:
                try:
                    yield decision_from_dict(orjson.loads(line), line)
                except ValueError as exc:
                    if not is_legacy_line(line):
                        raise self._corrupt(day, 0, offset, exc) from exc

    def _corrupt(self, day: str, start: int, offset: int, exc: Exception) -> CorruptLine:
        """A CorruptLine with its line number (counted only now, on the error path)."""
        lineno = None
        path = self.layout.day_file_s(day)
        if start == 0:
            with open(path, "rb") as fh:
                lineno = fh.read(offset).count(b"\n") + 1
        return CorruptLine(path, offset, f"not a record ({exc})", lineno)

    def recent(
        self, limit: int, on_corrupt: Callable[[CorruptLine], None] | None = None
    ) -> list[Decision]:
        """The newest ``limit`` decisions, oldest first, reading day files from their ends.

        A corrupt line raises ``CorruptLine``, or is passed to ``on_corrupt`` and skipped.
        """
        out: list[Decision] = []
        if limit <= 0:
            return out
        prefix = self.legacy_prefix()
        for day in reversed(self.days()):
            path = self.layout.day_file_s(day)
            if prefix.leaves and (prefix.end is None or day <= prefix.end[0]):
                found = list(self.decisions(day))
                out.extend(reversed(found[-(limit - len(out)) :]))
                if len(out) >= limit:
                    break
                continue
            for offset, line in self.lines_backward(day):
                try:
                    out.append(parse_record(line, file=path, offset=offset))
                except CorruptLine as exc:
                    if is_legacy_line(line):
                        continue
                    if on_corrupt is None:
                        raise
                    on_corrupt(exc)
                    continue
                if len(out) >= limit:
                    break
            if len(out) >= limit:
                break
        out.sort(key=lambda d: d.seq)
        return out

    def read(
        self, start: int = 0, stop: int | None = None, locate: Locate | None = None
    ) -> Iterator[Decision]:
        """Decisions with ``start <= seq < stop`` in seq order; ``locate`` (the index) finds
        where record ``start - 1`` ends, so reading starts there instead of at the first day."""
        if stop is not None and stop <= start:
            return
        days = self.days()
        begin_day, begin_off = (days[0], 0) if days else (None, 0)
        if start > 0 and days and locate is not None:
            loc = locate(start - 1)
            if loc is not None:
                begin_day, begin_off = loc[0], loc[1] + loc[2] + 1
        for day in days:
            if begin_day is not None and day < begin_day:
                continue
            for d in self.decisions(day, begin_off if day == begin_day else 0):
                if d.seq < start:
                    continue
                if stop is not None and d.seq >= stop:
                    return
                yield d

    def scan(self, since_us: int | None, until_us: int | None) -> Iterator[Decision]:
        """All decisions of the day files that overlap ``[since_us, until_us)``."""
        from .head import day_of  # the writer's module: ``recent`` readers do without it

        lo = day_of(since_us) if since_us is not None else None
        hi = day_of(until_us - 1) if until_us is not None else None
        days = [
            day for day in self.days() if (lo is None or day >= lo) and (hi is None or day <= hi)
        ]
        return itertools.chain.from_iterable(map(self.decisions, days))

    def leaves_from(self, seq: int, locate: Locate | None = None) -> Iterator[bytes]:
        """The tree's leaf inputs from leaf ``seq`` on: the legacy prefix's lines as they are
        (parsed or not), then the records' lines."""
        prefix = self.legacy_prefix()
        place = prefix.place(seq)
        if place is not None:
            n = seq
            for day in self.days():
                if day < place[0]:
                    continue
                for offset, _lineno, line in self.lines(day, place[1] if day == place[0] else 0):
                    if n >= prefix.leaves or not prefix.covers(day, offset):
                        break
                    yield line
                    n += 1
                if n >= prefix.leaves:
                    break
            seq = prefix.leaves
        yield from (d.line for d in self.read(seq, locate=locate))

    def leaf_lines(self) -> Iterator[tuple[str, int | None, bytes]]:
        """Every leaf input with its place, (day, line number, line), in order: the same
        leaves as ``leaves_from(0)``, read line by line. Lines of the original module after
        the legacy prefix are no leaves; a line that is neither is yielded as it is (a corrupt
        record is a leaf whose bytes are wrong)."""
        prefix = self.legacy_prefix()
        for day in self.days():
            for offset, lineno, line in self.lines(day):
                if prefix.covers(day, offset) or not is_legacy_line(line):
                    yield day, lineno, line

    def find_at_place(self, key: int | str) -> Decision | None:
        """The decision with seq ``key``, read at its place, or with id ``key``, without the
        index: for a log whose index cannot be built because some line is corrupt. Every line
        is a leaf at its place (a corrupt one too), so record ``seq`` is leaf ``seq``; a record
        is returned only when the seq it holds is its place. ``None``: not found there."""
        for place, (_day, _lineno, line) in enumerate(self.leaf_lines()):
            if isinstance(key, int) and place < key:
                continue
            try:
                found: Decision | None = read_line(line, place)
            except ValueError:
                found = None
            if isinstance(key, int):
                return found if found is not None and found.seq == key else None
            if found is not None and found.id == key:
                return found if found.seq == place else None
        return None


def _size_ino(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (-1, 0)
    return (st.st_size, st.st_ino)
