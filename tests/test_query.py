"""Time expressions and filters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reasoning_trace import DecisionLog, QueryError
from reasoning_trace.query import Filter, parse_time


def test_time_forms() -> None:
    """ISO (Z, offset, date only, naive UTC), Unix seconds, datetimes and spans all parse."""
    assert parse_time("2026-11-24T22:41:43.123456Z") == 1795646503123456 - 86400_000000
    assert parse_time("2026-11-25T00:41:43.123456+02:00") == parse_time(
        "2026-11-24T22:41:43.123456Z"
    )
    assert parse_time("2026-11-25") == 1795564800_000000
    assert parse_time("2026-11-25T00:00:00") == 1795564800_000000
    assert parse_time(1795564800) == 1795564800_000000
    assert parse_time(datetime(2026, 11, 25, tzinfo=UTC)) == 1795564800_000000
    assert parse_time("7d", now=1_000_000.0) == (1_000_000 - 7 * 86400) * 1_000_000
    assert parse_time("12h", now=100_000.0) == (100_000 - 12 * 3600) * 1_000_000
    assert parse_time(None) is None


@pytest.mark.parametrize("bad", ["yesterday-ish", "7 days", "", "12x"])
def test_bad_times_say_what_is_accepted(bad: str) -> None:
    """An unreadable time names itself and the accepted forms."""
    with pytest.raises(QueryError, match="ISO 8601"):
        parse_time(bad)


def test_empty_range_is_refused() -> None:
    """until before since is a usage error, not an empty answer."""
    with pytest.raises(QueryError, match="empty time range"):
        Filter.build(since="2026-11-25", until="2026-11-24")


def test_a_misspelt_criterion_is_a_type_error_not_every_decision(log: DecisionLog) -> None:
    """A criterion of no known name (a typo) is refused as any unexpected keyword is, instead
    of being ignored and matching every decision."""
    log.record("halt", True, {}, {})
    log.record("rollback", True, {}, {})
    assert [d.action for d in log.iter(action="halt")] == ["halt"]
    with pytest.raises(TypeError, match="actoin"):
        list(log.iter(actoin="halt"))  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="aproved"):
        Filter.build(aproved=False)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="voters"):
        Filter.from_text(voters="safety")  # type: ignore[call-arg]
