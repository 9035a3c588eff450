"""Events: decisions delivered to subscribers after they are durable (SPEC sections 5 and 7).

Each subscriber has its own delivery thread and bounded queue, so a subscriber that raises is
logged and goes on receiving, and one that hangs delays only itself: ``publish`` never blocks
the writer and the write is never lost. What leaves the process passes the consent gate, a
callable that maps a decision to what may be shared (or ``None`` to share nothing); the default
shares the summary of SPEC 5.
Tests: ``tests/test_events.py``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from .record import Decision

__all__ = [
    "ConsentGate",
    "EventBus",
    "Subscriber",
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
            delivery.queue.put(None) if not delivery.queue.full() else None

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
