"""The seed's module-level API (SPEC 5) keeps working, including a patched _resolve_trace_dir."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import reasoning_trace
from reasoning_trace import bus, decision_summary, read_recent, record_decision, set_consent_gate

from .conftest import SUBJECT, VOTES, all_lines


@pytest.fixture(autouse=True)
def close_shared_logs() -> Iterator[None]:
    """The compat functions keep one log per root open; close them after each test."""
    yield
    reasoning_trace.compat._close_all()


@pytest.fixture
def patched_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Monkeypatch _resolve_trace_dir as the original module's tests do."""
    root = tmp_path / "traces"
    monkeypatch.setattr(reasoning_trace, "_resolve_trace_dir", lambda: str(root))
    return root


def test_record_and_read_recent(patched_root: Path) -> None:
    """record_decision returns True once durable and read_recent returns dicts, oldest first."""
    for i in range(5):
        assert (
            record_decision(
                "upgrade_proposal",
                i % 2 == 0,
                VOTES,
                {**SUBJECT, "i": i},
                "r",
                event_bus_emit=False,
            )
            is True
        )
    rows = read_recent(3)
    assert [r["subject"]["i"] for r in rows] == [2, 3, 4]
    assert set(rows[0]) >= {
        "timestamp",
        "datetime_utc",
        "action",
        "approved",
        "votes",
        "subject",
        "reason",
        "seq",
        "id",
        "v",
    }
    assert len(all_lines(patched_root)) == 5


def test_file_for_honours_the_patch(patched_root: Path) -> None:
    """_file_for names today's UTC day file under the (patched) root."""
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert reasoning_trace._file_for() == str(patched_root / f"{today}.jsonl")
    assert reasoning_trace._file_for("2026-01-02") == str(patched_root / "2026-01-02.jsonl")
    record_decision("a", True, {}, {}, event_bus_emit=False)
    assert Path(reasoning_trace._file_for()).exists()


def test_refusal_returns_false_and_writes_nothing(
    patched_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A decision that cannot be stored returns False with a warning naming the field."""
    caplog.set_level(logging.WARNING, "reasoning_trace")
    assert record_decision("a", True, {}, {"blob": b"\x00"}, event_bus_emit=False) is False
    assert "subject.blob: bytes is not JSON" in caplog.text
    assert not list(patched_root.glob("*.jsonl"))
    assert record_decision("a", True, {}, {}, event_bus_emit=False) is True
    assert [r["seq"] for r in read_recent()] == [0]


def test_storage_failure_returns_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the root cannot be created (a file is in the way) it returns False, never raises."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setattr(reasoning_trace, "_resolve_trace_dir", lambda: str(blocker / "sub"))
    assert record_decision("a", True, {}, {}) is False


def test_read_recent_reports_corrupt_lines(
    patched_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt line is logged with its file, not skipped in silence; other rows come back."""
    record_decision("a", True, {}, {}, event_bus_emit=False)
    day_file = next(patched_root.glob("*.jsonl"))
    with open(day_file, "ab") as fh:
        fh.write(b"{not json}\n")
    caplog.set_level(logging.WARNING, "reasoning_trace")
    rows = read_recent()
    assert [r["seq"] for r in rows] == [0]
    assert str(day_file) in caplog.text


def test_event_published_with_summary(patched_root: Path) -> None:
    """event_bus_emit=True publishes the SPEC 5 summary to the product's subscribers."""
    got: list[dict[str, Any]] = []
    arrived = threading.Event()

    def subscriber(event: dict[str, Any]) -> None:
        got.append(event)
        arrived.set()

    unsubscribe = bus.subscribe(subscriber)
    try:
        subject = {**SUBJECT, "secret_prompt": "do not share"}
        assert record_decision("rollback", False, VOTES, subject) is True
        assert arrived.wait(5)
    finally:
        unsubscribe()
    assert got == [
        {
            "kind": "consensus_decision",
            "action": "rollback",
            "approved": False,
            "subject_summary": {
                "agent_id": "a1",
                "prompt_id": "p1",
                "goal_type": "plan",
                "version": "1.2.3",
            },
        }
    ]


def test_consent_gate_can_withhold(patched_root: Path) -> None:
    """A consent gate that returns None shares nothing of that decision; it is still recorded,
    and the decisions after it are delivered."""
    got: list[dict[str, Any]] = []
    done = threading.Event()

    def subscriber(event: dict[str, Any]) -> None:
        got.append(event)
        if event["action"] == "marker":
            done.set()

    unsubscribe = bus.subscribe(subscriber)
    set_consent_gate(lambda d: None if d.action == "halt" else decision_summary(d))
    try:
        assert record_decision("halt", True, {}, SUBJECT) is True
        assert record_decision("marker", True, {}, SUBJECT) is True
        assert done.wait(5)
    finally:
        set_consent_gate(None)
        unsubscribe()
    assert [e["action"] for e in got] == ["marker"]
    assert [r["action"] for r in read_recent()] == ["halt", "marker"]


def test_bus_subscribers_get_every_emitted_decision_and_catch_up(patched_root: Path) -> None:
    """event_bus_emit=True goes through durable delivery: a subscriber that raises is retried
    until it succeeds, and nothing is lost or skipped; event_bus_emit=False is withheld."""
    got: list[str] = []
    failing = threading.Event()
    failing.set()
    done = threading.Event()

    def flaky(event: dict[str, Any]) -> None:
        if failing.is_set():
            raise RuntimeError("sink is down")
        got.append(event["action"])
        if event["action"] == "a99":
            done.set()

    unsubscribe = bus.subscribe(flaky)
    try:
        for i in range(100):
            assert record_decision(f"a{i}", True, {}, SUBJECT, event_bus_emit=i % 10 != 5)
        failing.clear()  # the sink recovers
        assert done.wait(10)
    finally:
        unsubscribe()
    assert got == [f"a{i}" for i in range(100) if i % 10 != 5]


def test_a_named_bus_subscriber_resumes_where_it_left_off(patched_root: Path) -> None:
    """A named subscriber's cursor is durable: what was recorded while it was away arrives
    when it subscribes again, once."""
    got: list[str] = []
    first = threading.Event()
    unsubscribe = bus.subscribe(lambda e: (got.append(e["action"]), first.set()), name="audit")
    assert record_decision("one", True, {}, SUBJECT)
    assert first.wait(5)
    unsubscribe()
    assert record_decision("two", True, {}, SUBJECT)  # nobody listening as "audit"
    assert record_decision("three", True, {}, SUBJECT)
    done = threading.Event()

    def back(event: dict[str, Any]) -> None:
        got.append(event["action"])
        if event["action"] == "three":
            done.set()

    unsubscribe = bus.subscribe(back, name="audit")
    try:
        assert done.wait(5)
    finally:
        unsubscribe()
    assert got == ["one", "two", "three"]
