"""Where a log ends, and the instants of its records (SPEC sections 2 and 3).

The head is the next seq, the day file holding the last record, that file's size and inode,
and the last record's instant (Unix microseconds), below which no new record's instant goes
(time in the log never runs backwards). Writers cache it in ``.rtrace/lock`` (``layout``) as
one fixed-width text line, ``HEAD_BYTES`` long, and trust it only while the day file's inode
and size still match; otherwise it is recomputed from the day files (``recovery``).
Tests: ``tests/test_files.py``, ``tests/test_faults.py`` (clock steps, a lost head).
"""

from __future__ import annotations

import logging
import time

from .metrics import incr, observe_max
from .record import MAX_MICROS, Decision, format_utc, parse_utc

__all__ = ["HEAD_BYTES", "Head", "Instants", "day_of", "day_start", "instant"]

logger = logging.getLogger("reasoning_trace")

#: The head's size in ``.rtrace/lock``: one line, padded with spaces.
HEAD_BYTES = 96


class Head:
    """Where the log ends: next seq, the day file holding the last record, its size, inode, and
    the last record's instant (Unix microseconds), below which no new record's instant goes."""

    __slots__ = ("day", "ino", "micros", "next_seq", "size")

    def __init__(self, next_seq: int, day: str | None, size: int, ino: int, micros: int) -> None:
        self.next_seq, self.day, self.size, self.ino = next_seq, day, size, ino
        self.micros = micros

    def encode(self) -> bytes:
        """``<next_seq> <day or -> <size> <inode> <micros>\\n``, padded to ``HEAD_BYTES``."""
        text = f"{self.next_seq} {self.day or '-'} {self.size} {self.ino} {self.micros}\n"
        return text.encode().ljust(HEAD_BYTES, b" ")

    @staticmethod
    def invalid() -> bytes:
        """A head that never decodes: the next writer recomputes it from the day files."""
        return b"-".ljust(HEAD_BYTES, b" ")

    @classmethod
    def decode(cls, raw: bytes) -> Head | None:
        """The head ``encode`` wrote, or ``None`` for anything else (recompute it then)."""
        parts = raw.split()
        if len(parts) != 5:
            return None
        try:
            day = parts[1].decode()
            n, size, ino, micros = int(parts[0]), int(parts[2]), int(parts[3]), int(parts[4])
        except ValueError:
            return None
        return cls(n, None if day == "-" else day, size, ino, micros)


def day_start(day: str) -> int:
    """The first instant of a UTC day ``YYYY-MM-DD``, in Unix microseconds. The original
    module's own timestamps are not trusted as a floor (one bad clock reading would stamp
    every later record); the day of the file that holds them keeps file order all the same."""
    return parse_utc(f"{day}T00:00:00.000000Z")


def instant(record: Decision) -> int:
    """A record's instant in Unix microseconds (from ``datetime_utc``, else ``timestamp``)."""
    try:
        return parse_utc(record.datetime_utc)
    except ValueError:
        return int(record.timestamp * 1_000_000)


def day_of(micros: int) -> str:
    """The UTC day (``YYYY-MM-DD``) of an instant in Unix microseconds."""
    t = time.gmtime(micros // 1_000_000)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"


class Instants:
    """The instants of new records: the clock's reading, but never before the log's newest
    instant and never outside the years 1970-9999 (SPEC section 2). A step back is logged once
    with its size and counted (``metrics``: ``clock_steps_back``)."""

    def __init__(self) -> None:
        self.behind = False  # the clock was last seen behind the log's newest instant

    def clamp(self, micros: int, last: int) -> int:
        """The instant for a record when the clock reads ``micros`` and the log's newest
        instant is ``last``: never before ``last`` (time in the log never runs backwards, so
        file order stays seq order), never outside the years 1970-9999."""
        if micros > MAX_MICROS:
            if not self.behind:
                logger.warning(
                    "reasoning_trace: the clock reads past the year 9999 (%d us); records are "
                    "stamped 9999-12-31T23:59:59.999999Z until it is set right",
                    micros,
                )
                self.behind = True
            return max(last, MAX_MICROS)
        step = last - micros
        if not self.behind:
            self.behind = True
            incr("clock_steps_back")
            observe_max("clock_step_back_seconds", step / 1e6)
            logger.warning(
                "reasoning_trace: the clock is %.6f s behind the log's newest record (%s); "
                "records keep that instant until the clock catches up, so time in the log never "
                "runs backwards",
                step / 1e6,
                format_utc(last),
            )
        return max(last, 0)
