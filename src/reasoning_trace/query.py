"""Queries over decisions: time expressions and filters shared by the library and the CLI.

Times are taken as ISO 8601 (``2026-11-24``, ``2026-11-24T22:41:43Z``, with an offset; naive
times are UTC), Unix seconds (a number, or a string of up to 11 ASCII digits with an optional
fraction of up to 6, such as ``"1795962740"``; an eight-digit string is seconds, not a
basic-format date; the API's schema says the same),
``datetime`` objects, or a span back from now (``90s``, ``30m``,
``12h``, ``7d``, ``2w``). Ranges are half-open: ``since <= t < until``.
Tests: ``tests/test_query.py``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict, Unpack

import orjson

from .errors import QueryError
from .record import Decision

__all__ = [
    "EVERY",
    "Criteria",
    "Filter",
    "Page",
    "Stats",
    "Tally",
    "TextCriteria",
    "TimeSpec",
    "check_limit",
    "parse_time",
]

TimeSpec = str | int | float | datetime | None
_SECONDS_RE = re.compile(r"\s*[0-9]{1,11}(?:\.[0-9]{1,6})?\s*\Z", re.ASCII)
_SPAN_RE = re.compile(r"\s*([0-9]{1,15}(?:\.[0-9]{1,9})?)\s*([smhdw])\s*\Z", re.ASCII)
# Times a query may name: those a datetime can hold (years 1 to 9999), in Unix microseconds.
_MIN_MICROS, _MAX_MICROS = -62_135_596_800_000_000, 253_402_300_799_999_999
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(value: TimeSpec, *, now: float | None = None) -> int | None:
    """Unix microseconds for a time expression (see the module docstring); ``None`` stays.

    Raises ``QueryError`` for anything else, and for a time before year 1 or after 9999
    (``99999999999d``, NaN): no input reaches the index as an out-of-range number.
    """
    micros = _parse_time(value, now)
    if micros is not None and not _MIN_MICROS <= micros <= _MAX_MICROS:
        raise QueryError(f"time out of range: {str(value)[:40]!r} (years 1 to 9999)")
    return micros


def _parse_time(value: TimeSpec, now: float | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise QueryError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise QueryError(f"not a time: {value!r}")
        return round(value * 1_000_000)
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        return round(dt.timestamp() * 1_000_000)
    if not isinstance(value, str):
        raise QueryError(f"not a time: {value!r}")
    if _SECONDS_RE.match(value):
        return round(float(value) * 1_000_000)
    span = _SPAN_RE.match(value)
    if span:
        seconds = float(span.group(1)) * _UNIT[span.group(2)]
        return round(((time.time() if now is None else now) - seconds) * 1_000_000)
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(
            f"not a time: {value!r} (use ISO 8601 like 2026-11-24T22:00Z, "
            "Unix seconds, or a span like 12h or 7d)"
        ) from None
    return parse_time(dt)


def _loose_eq(stored: Any, wanted: Any) -> bool:
    """Equal, or equal as text when the filter came from a command line (``version=3``)."""
    if (stored == wanted and type(stored) is not bool) or stored is wanted:
        return True
    if isinstance(wanted, str) and stored is not None and not isinstance(stored, str):
        return orjson.dumps(stored).decode() == wanted
    return False


class Criteria(TypedDict, total=False):
    """The keyword criteria every reader takes (``Filter.build``, ``DecisionLog.iter``), each
    optional; every given one must hold.

    ``since``/``until``: a time expression (``parse_time``: ISO 8601, Unix seconds, ``15m``)
    or a ``datetime``, ``until`` exclusive; ``action``: exactly that action; ``approved``: the
    verdict; ``voter``: that voter voted against; ``subject``: the subject has each given key
    with the given value; ``node``: recorded by that node (fleet mode).
    """

    since: TimeSpec
    until: TimeSpec
    action: str | None
    approved: bool | None
    voter: str | None
    subject: Mapping[str, Any] | None
    node: str | None


class TextCriteria(TypedDict, total=False):
    """``Criteria`` as text from a command line or a query string (no ``subject``: that comes
    as ``KEY=VALUE`` items)."""

    since: str | None
    until: str | None
    action: str | None
    approved: bool | None
    voter: str | None
    node: str | None


def _known(criteria: Mapping[str, object], kind: Any) -> None:
    """Raise ``TypeError`` for a criterion ``kind`` (a ``TypedDict``) does not name."""
    names = kind.__optional_keys__ | kind.__required_keys__
    for name in criteria:
        if name not in names:
            known = ", ".join(sorted(names))
            raise TypeError(f"unexpected keyword argument {name!r} (criteria: {known})")


@dataclass(frozen=True)
class Page:
    """Which of a filter's matches to return, in seq order: at most ``limit`` (``None``: all),
    oldest first or ``newest_first``, and with ``before_seq`` only seqs below it (a cursor
    for the next page, newest first)."""

    limit: int | None = None
    newest_first: bool = False
    before_seq: int | None = None

    def __post_init__(self) -> None:
        check_limit(self.limit)
        if self.before_seq is not None and (
            isinstance(self.before_seq, bool)
            or not isinstance(self.before_seq, int)
            or self.before_seq < 0
        ):
            raise QueryError(f"a cursor is a seq (0 or more), not {self.before_seq!r}")


def check_limit(limit: object, what: str = "limit") -> None:
    """Refuse a count that is not a whole number of 0 or more (``None``: no limit) with a
    ``QueryError`` naming it: ``-3`` is not "all but three"."""
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise QueryError(f"{what} must be a whole number of 0 or more, not {limit!r}")


#: Every match, oldest first.
EVERY = Page()


@dataclass(frozen=True)
class Filter:
    """Which decisions to keep; every given criterion must hold."""

    since_us: int | None = None
    until_us: int | None = None
    action: str | None = None
    approved: bool | None = None
    voter: str | None = None  # that voter voted against (passed is False)
    subject: Mapping[str, Any] = field(default_factory=dict)
    node: str | None = None

    @classmethod
    def build(cls, **criteria: Unpack[Criteria]) -> Filter:
        """A filter from keyword ``Criteria`` (time expressions are parsed here; a
        ``QueryError`` names one that cannot be, or an empty time range). A criterion of
        another name is a ``TypeError``, as for any function: a misspelt one must not match
        every decision."""
        _known(criteria, Criteria)
        now = time.time()
        since, until = criteria.get("since"), criteria.get("until")
        since_us, until_us = parse_time(since, now=now), parse_time(until, now=now)
        if since_us is not None and until_us is not None and until_us <= since_us:
            raise QueryError(f"empty time range: until ({until}) is not after since ({since})")
        return cls(
            since_us,
            until_us,
            criteria.get("action"),
            criteria.get("approved"),
            criteria.get("voter"),
            dict(criteria.get("subject") or {}),
            criteria.get("node"),
        )

    @property
    def is_empty(self) -> bool:
        """Whether the filter keeps every decision."""
        return self == _EMPTY

    @property
    def selective(self) -> bool:
        """Whether it filters on more than time (then the index beats reading day files)."""
        return (
            self.action is not None
            or self.approved is not None
            or self.voter is not None
            or self.node is not None
            or bool(self.subject)
        )

    @classmethod
    def from_text(cls, *, subject: Iterable[str] = (), **criteria: Unpack[TextCriteria]) -> Filter:
        """A filter from command-line or query-string text: subject filters as KEY=VALUE."""
        _known(criteria, TextCriteria)
        pairs = {}
        for item in subject:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise QueryError(f"subject filter {item!r} is not KEY=VALUE")
            pairs[key] = value
        return cls.build(subject=pairs, **criteria)

    def matches(self, d: Decision) -> bool:
        """Whether decision ``d`` passes every criterion."""
        if self.since_us is not None or self.until_us is not None:
            t = round(d.timestamp * 1_000_000)
            if self.since_us is not None and t < self.since_us:
                return False
            if self.until_us is not None and t >= self.until_us:
                return False
        if self.action is not None and d.action != self.action:
            return False
        if self.approved is not None and d.approved is not self.approved:
            return False
        if self.node is not None and d.node != self.node:
            return False
        if self.voter is not None and self.voter not in d.against:
            return False
        for key, wanted in self.subject.items():
            if key not in d.subject or not _loose_eq(d.subject[key], wanted):
                return False
        return True


_EMPTY = Filter()


@dataclass(frozen=True)
class ActionStats:
    """Decisions of one action: how many, how many approved."""

    action: str
    total: int
    approved: int

    @property
    def approval_rate(self) -> float:
        """Approved / total."""
        return self.approved / self.total if self.total else 0.0


@dataclass(frozen=True)
class Stats:
    """Approval rate per action, vetoes per voter, decisions per day, over one filter."""

    actions: list[ActionStats]
    vetoes: list[tuple[str, int]]  # voter, decisions that voter voted against; most first
    days: list[tuple[str, int, int]]  # day, decisions, approved
    nodes: list[tuple[str, int, int]] = field(default_factory=list)  # node, decisions, approved

    @property
    def total(self) -> int:
        """All decisions counted."""
        return sum(a.total for a in self.actions)

    @property
    def approved(self) -> int:
        """Approved decisions counted."""
        return sum(a.approved for a in self.actions)

    @classmethod
    def of(cls, decisions: Iterable[Decision]) -> Stats:
        """Aggregate decisions in one pass, ordered as the index orders its stats (for
        sources without an index, such as a fleet's stream)."""
        tally = Tally()
        for d in decisions:
            tally.add(d)
        return tally.stats()

    def to_json(self) -> dict[str, Any]:
        """The stats as a JSON object."""
        return {
            "total": self.total,
            "approved": self.approved,
            "actions": [
                {
                    "action": a.action,
                    "total": a.total,
                    "approved": a.approved,
                    "approval_rate": round(a.approval_rate, 4),
                }
                for a in self.actions
            ],
            "vetoes": [{"voter": v, "vetoes": n} for v, n in self.vetoes],
            "days": [{"day": d, "total": n, "approved": a} for d, n, a in self.days],
            "nodes": [{"node": d, "total": n, "approved": a} for d, n, a in self.nodes],
        }


class Tally:
    """Counts being added up into ``Stats``: decisions one by one (``add``) or already
    counted (``count``, ``veto``: the derived index's aggregates)."""

    def __init__(self) -> None:
        self.actions: dict[str, list[int]] = {}
        self.voters: dict[str, int] = {}
        self.days: dict[str, list[int]] = {}
        self.nodes: dict[str, list[int]] = {}

    def add(self, d: Decision) -> None:
        """Count one decision."""
        self.count(d.day, d.action, d.approved, d.node or "", 1)
        for voter in d.against:
            self.voters[voter] = self.voters.get(voter, 0) + 1

    def count(self, day: str, action: str, approved: bool, node: str, n: int) -> None:
        """Count ``n`` decisions of one day, action, verdict and node (``""``: none)."""
        ok = n if approved else 0
        for table, key in ((self.actions, action), (self.days, day), (self.nodes, node)):
            row = table.get(key)
            if row is None:
                table[key] = [n, ok]
            else:
                row[0] += n
                row[1] += ok

    def veto(self, voter: str, n: int) -> None:
        """Count ``n`` votes against by ``voter``."""
        self.voters[voter] = self.voters.get(voter, 0) + n

    def stats(self) -> Stats:
        """The ``Stats``: actions and voters most first (then by name), days and nodes in
        order."""
        return Stats(
            [
                ActionStats(a, n, ok)
                for a, (n, ok) in sorted(self.actions.items(), key=lambda kv: (-kv[1][0], kv[0]))
            ],
            sorted(self.voters.items(), key=lambda kv: (-kv[1], kv[0])),
            [(day, n, ok) for day, (n, ok) in sorted(self.days.items())],
            [(node, n, ok) for node, (n, ok) in sorted(self.nodes.items())],
        )
