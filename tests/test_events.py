"""Subscribers never block or lose a write (SPEC 7)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from reasoning_trace import DecisionLog
from reasoning_trace.events import EventBus, decision_summary


def test_failing_and_hanging_subscribers_do_not_block(tmp_path: Path) -> None:
    """A subscriber that raises and one that hangs leave publishing and others unaffected."""
    bus = EventBus()
    release = threading.Event()
    healthy: list[int] = []
    all_in = threading.Event()

    def raises(event: dict[str, Any]) -> None:
        raise RuntimeError("subscriber bug")

    def hangs(event: dict[str, Any]) -> None:
        release.wait()

    def good(event: dict[str, Any]) -> None:
        healthy.append(event["n"])
        if len(healthy) == 500:
            all_in.set()

    bus.subscribe(raises)
    bus.subscribe(hangs)
    bus.subscribe(good)
    with DecisionLog(str(tmp_path / "log"), sync="never") as log:
        for n in range(500):
            d = log.record("a", True, {}, {"n": n})
            bus.publish({"n": d.subject["n"]})
        assert len(log) == 500
    assert all_in.wait(10)
    assert healthy == list(range(500))
    release.set()


def test_summary_keeps_only_the_four_keys(tmp_path: Path) -> None:
    """The default shared summary keeps agent_id, prompt_id, goal_type and version only."""
    with DecisionLog(str(tmp_path / "log"), sync="never") as log:
        d = log.record("a", True, {}, {"agent_id": 1, "version": 2, "prompt": "x", "goal_type": 3})
    assert decision_summary(d)["subject_summary"] == {"agent_id": 1, "version": 2, "goal_type": 3}
