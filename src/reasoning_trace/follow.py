"""Following a file store live: the ``tail -f`` of the decision log.

Followers take no lock and never write. They read only complete lines (a line still being
written, or a torn tail a crash left, has no newline yet and is not consumed), and move to the
next day file only after draining the current one once more, so a batch that straddles UTC
midnight is seen in seq order. The original module's lines are read as ``read`` reads them:
in the legacy prefix, legacy records whose seq is their position; after this product's records,
passed over (the next writer records their content again). Polling (default every 10 ms) keeps
this portable and works whichever process writes.
Tests: ``tests/test_follow.py`` (other processes writing, midnight under ``faketime``).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import orjson

from .errors import CorruptLine
from .legacy import is_legacy_line, read_line
from .record import Decision, decision_from_dict

if TYPE_CHECKING:
    from .day_files import DayFiles, Locate

__all__ = ["follow_files"]

POLL_SECONDS = 0.01


def _start(store: DayFiles, locate: Locate, after_seq: int | None) -> tuple[str | None, int, int]:
    """(day, byte offset, last seq seen) to start following from."""
    days = store.days()
    if not days:
        return None, 0, -1 if after_seq is None else after_seq
    if after_seq is None:
        day = days[-1]
        for offset, line in store.lines_backward(day):
            obj = orjson.loads(line) if line.startswith(b"{") else None
            seq = obj.get("seq") if isinstance(obj, dict) else None
            if type(seq) is not int:  # the original module's line: its seq is its position
                seq = store.legacy_prefix().leaves - 1
            return day, offset + len(line) + 1, seq
        return day, 0, -1
    if after_seq < 0:
        return days[0], 0, -1
    loc = locate(after_seq)
    if loc is None:  # beyond the head: wait at the end for it
        end_day, end_offset, seq = _start(store, locate, None)
        return end_day, end_offset, max(seq, after_seq)
    return loc[0], loc[1] + loc[2] + 1, after_seq


def _legacy(store: DayFiles, day: str, offset: int, line: bytes) -> Decision | None:
    """The original module's line at (day, offset) as ``read`` gives it: a legacy record whose
    seq is its position when it is in the legacy prefix, else ``None``."""
    prefix = store.legacy_prefix()
    if not prefix.covers(day, offset):
        return None
    seq = bisect.bisect_left(
        range(prefix.leaves), (day, offset), key=lambda n: prefix.place(n) or ("", 0)
    )
    if prefix.place(seq) != (day, offset):
        return None
    try:
        return read_line(line, seq)
    except ValueError:
        return None  # a prefix line that is no record: a leaf, but nothing to yield


def follow_files(
    store: DayFiles,
    locate: Locate,
    after_seq: int | None,
    stop: Callable[[], bool],
    poll: float = POLL_SECONDS,
) -> Iterator[Decision]:
    """Yield each decision with seq > ``after_seq`` as it lands, until ``stop()``.

    The starting point is fixed now, when this is called, not at the first ``next()``: with
    ``after_seq=None`` nothing recorded after the call is missed. ``locate`` (the index) finds
    where the record ``after_seq`` ends.
    """
    return _follow(store, _start(store, locate, after_seq), stop, poll)


def _follow(
    store: DayFiles,
    start: tuple[str | None, int, int],
    stop: Callable[[], bool],
    poll: float,
) -> Iterator[Decision]:
    day, offset, last = start

    def drain() -> Iterator[Decision]:
        nonlocal offset, last
        assert day is not None
        for off, _lineno, line in store.lines(day, offset):
            offset = off + len(line) + 1
            try:
                decision = decision_from_dict(orjson.loads(line), line)
            except ValueError as exc:
                if not is_legacy_line(line):
                    raise CorruptLine(
                        str(store.layout.day_file(day)), off, f"not a record ({exc})"
                    ) from exc
                found = _legacy(store, day, off, line)
                if found is None:
                    continue  # after this product's records: no seq; the writer takes it in
                decision = found
            if decision.seq > last:
                last = decision.seq
                yield decision

    while True:
        got = False
        if day is not None:
            for decision in drain():
                got = True
                yield decision
        if got:
            continue
        if stop():
            return
        newer = [d for d in store.days() if day is None or d > day]
        if newer:
            if day is not None:
                for decision in drain():  # lines written just before the new file appeared
                    got = True
                    yield decision
                if got:
                    continue
            day, offset = newer[0], 0
            continue
        time.sleep(poll)
