"""Events: decisions delivered to subscribers after they are durable (SPEC sections 5 and 7).

Each subscriber has its own delivery thread and bounded queue, so a subscriber that raises is
logged and goes on receiving, and one that hangs delays only itself: ``publish`` never blocks
the writer and the write is never lost. What leaves the process passes the consent gate, a
callable that maps a decision to what may be shared (or ``None`` to share nothing); the default
shares the summary of SPEC 5.
Tests: ``tests/test_events.py``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .record import Decision

__all__ = [
    "ConsentGate",
    "EventBus",
    "Subscriber",
    "Subscription",
    "bus",
    "decision_summary",
    "set_consent_gate",
]

logger = logging.getLogger("reasoning_trace")

Subscriber = Callable[[dict[str, Any]], object]
ConsentGate = Callable[[Decision], "dict[str, Any] | None"]
SUMMARY_KEYS = ("agent_id", "prompt_id", "goal_type", "version")
QUEUE_LIMIT = 10_000


def decision_summary(decision: Decision) -> dict[str, Any]:
    """The event of SPEC 5: kind, action, verdict and a summary of the subject."""
    return {
        "kind": "consensus_decision",
        "action": decision.action,
        "approved": decision.approved,
        "subject_summary": {k: v for k, v in decision.subject.items() if k in SUMMARY_KEYS},
    }


class _Delivery:
    def __init__(self, callback: Subscriber) -> None:
        self.callback = callback
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_LIMIT)
        self.dropped = 0
        self.thread = threading.Thread(target=self._run, name="rtrace-subscriber", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (event := self.queue.get()) is not None:
            try:
                self.callback(event)
            except Exception:  # a subscriber's failure is its own; log it and go on (SPEC 7)
                logger.exception("reasoning_trace: subscriber %r raised", self.callback)

    def stop(self) -> None:
        """End the delivery thread once it has handed over what is queued (or at once, if
        the queue is full: those events were for a subscriber that is leaving)."""
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(None)
            return
        while True:  # full: make room for the stop marker
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        self.queue.put_nowait(None)

    def offer(self, event: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning(
                    "reasoning_trace: subscriber %r is not keeping up; %d events dropped",
                    self.callback,
                    self.dropped,
                )


class EventBus:
    """In-process subscribers of decision events."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deliveries: list[_Delivery] = []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Deliver every later event to ``callback``; returns a function that unsubscribes."""
        delivery = _Delivery(callback)
        with self._lock:
            self._deliveries = [*self._deliveries, delivery]

        def unsubscribe() -> None:
            with self._lock:
                self._deliveries = [d for d in self._deliveries if d is not delivery]
            delivery.stop()

        return unsubscribe

    def publish(self, event: dict[str, Any]) -> None:
        """Hand ``event`` to every subscriber without waiting for any of them."""
        for delivery in self._deliveries:
            delivery.offer(event)


bus = EventBus()
_gate: ConsentGate = decision_summary


def set_consent_gate(gate: ConsentGate | None) -> None:
    """Replace what leaves the process for each decision (``None`` restores the default)."""
    global _gate
    _gate = gate or decision_summary


def emit_decision(decision: Decision) -> None:
    """Publish what the consent gate allows of ``decision`` to the product's subscribers."""
    try:
        event = _gate(decision)
    except Exception:  # a failing gate shares nothing; the decision is already durable
        logger.exception("reasoning_trace: consent gate failed; nothing was shared")
        return
    if event is not None:
        bus.publish(event)


class Subscription:
    """Durable, at-least-once delivery of a log's decisions to one named subscriber.

    Decisions come from the log itself (not from the writer), so a subscriber that is slow,
    raises or hangs never blocks a write nor loses an event: its own thread follows the log
    from its cursor, calls ``callback`` with what the consent gate lets through, and advances
    the cursor only after the callback returned. A callback that raises is retried on the same
    decision with backoff (up to ``max_backoff`` seconds), so once it is fixed it catches up.
    The cursor (``<root>/.rtrace/cursors/<name>``) is written at most every ``save_every``
    seconds and on stop; after a crash delivery resumes from it (at-least-once).
    """

    def __init__(
        self,
        log: Any,
        name: str,
        callback: Subscriber,
        *,
        gate: ConsentGate | None = None,
        start: int | None = None,
        save_every: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        if not name or any(c in name for c in "/\\\0") or name.startswith("."):
            raise ValueError(f"a subscriber name must be a plain file name, not {name!r}")
        self.name = name
        self.callback = callback
        self.gate = gate or decision_summary
        self._log = log
        self._path = log.root / ".rtrace" / "cursors" / name
        self._save_every = save_every
        self._max_backoff = max_backoff
        self._stop = threading.Event()
        saved = self._load()
        self.cursor = saved if saved is not None else (len(log) - 1 if start is None else start)
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name=f"rtrace-sub-{name}", daemon=True)
        self._thread.start()

    def _load(self) -> int | None:
        try:
            return int(self._path.read_text().strip())
        except FileNotFoundError:
            return None
        except ValueError:
            logger.warning("reasoning_trace: cursor %s is unreadable; starting anew", self._path)
            return None

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(f"{self.cursor}\n")
        os.replace(tmp, self._path)

    def _run(self) -> None:
        saved_at = time.monotonic()
        for decision in self._log.follow(after_seq=self.cursor, stop=self._stop.is_set):
            backoff = 0.01
            while not self._stop.is_set():
                try:
                    event = self.gate(decision)
                    if event is not None:
                        self.callback(event)
                    break
                except Exception:  # a subscriber's failure is its own: retried, logged
                    self.failures += 1
                    if self.failures == 1 or self.failures % 100 == 0:
                        logger.exception(
                            "reasoning_trace: subscriber %s failed on seq %d "
                            "(%d failures); retrying",
                            self.name,
                            decision.seq,
                            self.failures,
                        )
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self._max_backoff)
            if self._stop.is_set():
                break
            self.cursor = decision.seq
            if time.monotonic() - saved_at >= self._save_every:
                self._save()
                saved_at = time.monotonic()
        self._save()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop delivering and save the cursor (a callback still running is not interrupted)."""
        self._stop.set()
        self._thread.join(timeout)
