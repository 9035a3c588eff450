"""Fleet-wide stats from the fleet index (``fleet_index.py``): approval rate per action,
vetoes per voter, per day and per node.

Whole UTC days are counted from the per-day totals the index keeps while it catches up (a
year is a few thousand rows); only the partial days at the ends of a time range, and filters
on voters or subjects, count records. The rows are folded into ``Stats`` in the order
``Stats.of`` gives them, so the index answers as a full read of the stream does.
Tests: ``tests/test_fleet_index.py``.
"""

from __future__ import annotations

import dataclasses
import sqlite3

from .index_sql import where_sql
from .query import ActionStats, Filter, Stats
from .record import format_utc

__all__ = ["count_stats"]

_DAY_US = 86_400_000_000


def count_stats(db: sqlite3.Connection, flt: Filter) -> Stats:
    """The stats of the records ``flt`` matches in the index ``db`` (its subject values all
    text: the SQL conditions decide it exactly)."""
    counts: list[tuple[str, str, str, int, int]] = []
    vetoes: list[tuple[str, str, str, int, str, int]] = []
    if flt.voter is not None or flt.subject:
        _count_records(db, flt, counts, vetoes)
        return _fold(counts, vetoes)
    lo, hi = flt.since_us, flt.until_us
    first = None if lo is None else -(-lo // _DAY_US) * _DAY_US  # whole days from
    last = None if hi is None else hi // _DAY_US * _DAY_US  # whole days before
    if first is not None and last is not None and first >= last:
        _count_records(db, flt, counts, vetoes)  # within one day
        return _fold(counts, vetoes)
    if lo is not None and first is not None and lo < first:
        _count_records(db, dataclasses.replace(flt, until_us=first), counts, vetoes)
    _count_days(db, flt, first, last, counts, vetoes)
    if hi is not None and last is not None and last < hi:
        _count_records(db, dataclasses.replace(flt, since_us=last), counts, vetoes)
    return _fold(counts, vetoes)


def _count_records(
    db: sqlite3.Connection,
    flt: Filter,
    counts: list[tuple[str, str, str, int, int]],
    vetoes: list[tuple[str, str, str, int, str, int]],
) -> None:
    where, args = where_sql(flt)
    counts.extend(
        db.execute(
            f"SELECT day, node, action, approved, COUNT(*) FROM records r WHERE {where} "
            "GROUP BY 1, 2, 3, 4",
            args,
        )
    )
    vetoes.extend(
        db.execute(
            "SELECT r.day, r.node, r.action, r.approved, v.voter, COUNT(*) FROM vetoes v "
            f"JOIN records r ON r.seq = v.seq WHERE {where} GROUP BY 1, 2, 3, 4, 5",
            args,
        )
    )


def _count_days(
    db: sqlite3.Connection,
    flt: Filter,
    first: int | None,
    last: int | None,
    counts: list[tuple[str, str, str, int, int]],
    vetoes: list[tuple[str, str, str, int, str, int]],
) -> None:
    conds: list[str] = ["1"]
    args: list[object] = []
    if first is not None:
        conds.append("day >= ?")
        args.append(format_utc(first)[:10])
    if last is not None:
        conds.append("day < ?")
        args.append(format_utc(last)[:10])
    for column, value in (("node", flt.node), ("action", flt.action)):
        if value is not None:
            conds.append(f"{column} = ?")
            args.append(value)
    if flt.approved is not None:
        conds.append("approved = ?")
        args.append(int(flt.approved))
    where = " AND ".join(conds)
    counts.extend(
        db.execute(f"SELECT day, node, action, approved, n FROM daily WHERE {where}", args)
    )
    vetoes.extend(
        db.execute(
            f"SELECT day, node, action, approved, voter, n FROM daily_vetoes WHERE {where}",
            args,
        )
    )


def _fold(
    counts: list[tuple[str, str, str, int, int]],
    vetoes: list[tuple[str, str, str, int, str, int]],
) -> Stats:
    """Stats from (day, node, action, approved, n) and (…, voter, n) rows, ordered as
    ``Stats.of`` orders them."""
    actions: dict[str, list[int]] = {}
    days: dict[str, list[int]] = {}
    nodes: dict[str, list[int]] = {}
    voters: dict[str, int] = {}
    for day, node, action, approved, n in counts:
        for table, key in ((actions, action), (days, day), (nodes, node)):
            row = table.setdefault(key, [0, 0])
            row[0] += n
            if approved:
                row[1] += n
    for *_, voter, n in vetoes:
        voters[voter] = voters.get(voter, 0) + n
    return Stats(
        [
            ActionStats(a, n, ok)
            for a, (n, ok) in sorted(actions.items(), key=lambda kv: (-kv[1][0], kv[0]))
        ],
        sorted(voters.items(), key=lambda kv: (-kv[1], kv[0])),
        [(day, n, ok) for day, (n, ok) in sorted(days.items())],
        [(node, n, ok) for node, (n, ok) in sorted(nodes.items())],
    )
