"""Process-wide counters of events an operator must see even when nothing failed loudly.

A clock that stepped back under the writer, a checkpoint that could not be written, a decision
that ``record_decision`` could not store: each is logged where it happens and counted here, so
``/metrics`` (the server), ``rtrace doctor`` and the embedding program can read the totals. The
counters live in memory, per process; they are observations, not part of the log.

Names (all monotonic totals):

- ``clock_steps_back``: times the clock was found behind the log's newest instant;
- ``clock_step_back_seconds``: the largest such step seen, in seconds (a maximum, not a sum);
- ``checkpoint_write_failures``: checkpoints that were due but could not be written;
- ``torn_tails_quarantined`` / ``newlines_restored``: crash repairs of day and checkpoint files;
- ``decisions_not_stored`` / ``decisions_refused``: ``record_decision`` calls that returned
  ``False`` because the log could not store, or because the decision was refused.

Tests: ``tests/test_faults.py``.
"""

from __future__ import annotations

import threading

__all__ = ["counters", "incr", "observe_max"]

_lock = threading.Lock()
_values: dict[str, float] = {}


def incr(name: str, amount: float = 1) -> None:
    """Add ``amount`` to the counter ``name``."""
    with _lock:
        _values[name] = _values.get(name, 0) + amount


def observe_max(name: str, value: float) -> None:
    """Keep the largest ``value`` seen under ``name``."""
    with _lock:
        if value > _values.get(name, float("-inf")):
            _values[name] = value


def counters() -> dict[str, float]:
    """A snapshot of every counter of this process: name -> value."""
    with _lock:
        return dict(_values)
