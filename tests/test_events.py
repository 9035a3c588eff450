"""Subscribers never block or lose a write (SPEC 7)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

from reasoning_trace import DecisionLog
from reasoning_trace.events import EventBus, decision_summary, set_consent_gate


def test_failing_and_hanging_subscribers_do_not_block(tmp_path: Path) -> None:
    """A subscriber that raises and one that hangs leave the writer and others unaffected."""
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

    unsubscribes = [bus.subscribe(raises), bus.subscribe(hangs), bus.subscribe(good)]
    set_consent_gate(lambda d: {"n": d.subject["n"]})
    try:
        with DecisionLog(str(tmp_path / "log"), sync="never") as log:
            bus.attach(log)
            for n in range(500):
                log.record("a", True, {}, {"n": n})
            assert len(log) == 500
            assert all_in.wait(10)
            release.set()
            bus.detach(log)
    finally:
        set_consent_gate(None)
        release.set()
        for unsubscribe in unsubscribes:
            unsubscribe()
    assert healthy == list(range(500))


def test_summary_keeps_only_the_four_keys(tmp_path: Path) -> None:
    """The default shared summary keeps agent_id, prompt_id, goal_type and version only."""
    with DecisionLog(str(tmp_path / "log"), sync="never") as log:
        d = log.record("a", True, {}, {"agent_id": 1, "version": 2, "prompt": "x", "goal_type": 3})
    assert decision_summary(d)["subject_summary"] == {"agent_id": 1, "version": 2, "goal_type": 3}


def wait_until(check: Any, seconds: float = 20) -> bool:
    """Poll ``check()`` until true or the time is up (for deliveries from other threads)."""
    pause = threading.Event()
    end = time.monotonic() + seconds
    while not check():
        if time.monotonic() > end:
            return False
        pause.wait(0.01)
    return True


def test_durable_cursor_resumes_without_loss(tmp_path: Path) -> None:
    """A named subscriber gets every decision after its cursor; restarted, it resumes there,
    even after the log's derived files were deleted."""
    got: list[int] = []
    with DecisionLog(str(tmp_path / "log"), sync="never") as log:
        sub = log.subscribe(
            "audit", lambda e: got.append(e["n"]), gate=lambda d: {"n": d.subject["n"]}, start=-1
        )
        for n in range(100):
            log.record("a", True, {}, {"n": n})
        assert wait_until(lambda: sub.cursor == 99)
        sub.stop()
        shutil.rmtree(tmp_path / "log" / ".rtrace")  # derived (SPEC 2): the cursor is not there
        for n in range(100, 150):
            log.record("a", True, {}, {"n": n})
        again = log.subscribe(
            "audit", lambda e: got.append(e["n"]), gate=lambda d: {"n": d.subject["n"]}
        )
        assert wait_until(lambda: again.cursor == 149)
        again.stop()
    assert got == list(range(150))


COUNT = 10_000  # the figure


def test_failing_and_hanging_subscribers_catch_up(tmp_path: Path) -> None:
    """A subscriber that raises and one that hangs never block writes; fixed, both catch up."""
    broken = threading.Event()
    broken.set()
    release = threading.Event()
    failing_got: list[int] = []
    hanging_got: list[int] = []

    def failing(event: dict[str, Any]) -> None:
        if broken.is_set():
            raise RuntimeError("downstream is down")
        failing_got.append(event["n"])

    def hanging(event: dict[str, Any]) -> None:
        release.wait()
        hanging_got.append(event["n"])

    gate = lambda d: {"n": d.subject["n"]}  # noqa: E731
    with DecisionLog(str(tmp_path / "log"), sync="never") as log:
        subs = [
            log.subscribe("failing", failing, gate=gate, start=-1),
            log.subscribe("hanging", hanging, gate=gate, start=-1),
        ]
        for n in range(COUNT):
            log.record("a", True, {}, {"n": n})  # returns although both subscribers are stuck
        assert len(log) == COUNT and failing_got == [] and hanging_got == []
        assert wait_until(lambda: subs[0].failures > 0)
        broken.clear()
        release.set()
        assert wait_until(lambda: len(failing_got) == COUNT and len(hanging_got) == COUNT)
        for sub in subs:
            sub.stop()
    assert failing_got == list(range(COUNT)) and hanging_got == list(range(COUNT))


def test_default_gate_shares_only_the_summary(tmp_path: Path) -> None:
    """Without a gate a subscriber receives the SPEC 5 summary; a gate returning None skips."""
    got: list[dict[str, Any]] = []
    with DecisionLog(str(tmp_path / "log"), sync="never") as log:
        sub = log.subscribe("ops", got.append, start=-1)
        log.record("halt", False, {"s": {"passed": False}}, {"agent_id": "a", "secret": "x"})
        assert wait_until(lambda: len(got) == 1)
        sub.stop()
        skipped: list[dict[str, Any]] = []
        none = log.subscribe("none", skipped.append, gate=lambda d: None, start=-1)
        assert wait_until(lambda: none.cursor == 0)
        none.stop()
    assert got == [
        {
            "kind": "consensus_decision",
            "action": "halt",
            "approved": False,
            "subject_summary": {"agent_id": "a"},
        }
    ]
    assert skipped == []
