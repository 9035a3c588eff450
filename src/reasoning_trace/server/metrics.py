"""``GET /metrics``: the server in Prometheus text.

Decisions by action and verdict (from the index's aggregates, cached 10 s), the append
latency of ``POST /v1/decisions``, the newest checkpoint's size and age, whether the last
background verify passed, and what this process counted going wrong quietly
(``reasoning_trace.metrics``: clock steps, checkpoints not written, decisions not stored).
The ``action`` label keeps the ``metric_actions`` most frequent actions and counts the rest
as ``_other``: any writer chooses action names, and a label per name would let it grow
``/metrics`` without end. The route is a FastAPI route over ``generate_latest`` rather than
``prometheus_client.make_asgi_app``, so that it needs a read token like every other route and
refuses as they do.
Tests: ``tests/test_server.py``, ``tests/test_hostile_http.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..log import DecisionLog
from ..metrics import counters
from ..verify_watch import Watch
from .problems import PROBLEMS
from .state import served

__all__ = ["ServerMetrics", "bounded_actions", "router"]


def bounded_actions(actions: Iterable[Any], keep: int) -> list[tuple[str, int, int]]:
    """(action, total, approved) for the ``keep`` most frequent actions, the rest as _other."""
    ranked = sorted(actions, key=lambda a: (-a.total, a.action))
    out = [(a.action, a.total, a.approved) for a in ranked[:keep]]
    rest = ranked[keep:]
    if rest:
        out.append(("_other", sum(a.total for a in rest), sum(a.approved for a in rest)))
    return out


def _epoch(when: str) -> float:
    """Unix seconds of a ``datetime_utc`` string."""
    return datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()


class ServerMetrics:
    """One app's registry: the append latency it observes and what it reads at each scrape."""

    def __init__(self, log: DecisionLog, audit: Watch, metric_actions: int) -> None:
        self.log, self.audit, self.metric_actions = log, audit, metric_actions
        self.registry = CollectorRegistry()
        self.append_latency = Histogram(
            "rtrace_append_seconds",
            "Time to record one decision durably",
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
        )
        self._cached: tuple[float, list[tuple[str, int, int]]] = (0.0, [])
        self.registry.register(self)

    def text(self) -> str:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry).decode()

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Decision counts, checkpoint and verify gauges, and this process's counters."""
        log = self.log
        now = time.time()
        if now - self._cached[0] > 10:
            actions = log.stats(approximate=True).actions
            self._cached = (now, bounded_actions(actions, self.metric_actions))
        decisions = GaugeMetricFamily(
            "rtrace_decisions", "Decisions in the log", labels=["action", "verdict"]
        )
        for action, total, approved in self._cached[1]:
            decisions.add_metric([action, "approved"], approved)
            decisions.add_metric([action, "rejected"], total - approved)
        yield decisions
        latest = log.checkpoints.latest()
        size = GaugeMetricFamily("rtrace_checkpoint_size", "Records the newest checkpoint covers")
        size.add_metric([], latest.size if latest else 0)
        yield size
        age = GaugeMetricFamily("rtrace_checkpoint_age_seconds", "Age of the newest checkpoint")
        age.add_metric([], now - _epoch(latest.datetime_utc) if latest else float("nan"))
        yield age
        status = GaugeMetricFamily(
            "rtrace_verify_ok",
            "1 if the last verify passed, 0 if it failed, -1 if it has not run",
        )
        ok = self.audit.ok
        status.add_metric([], -1 if ok is None else int(ok))
        yield status
        # What this process saw go wrong without failing loudly (reasoning_trace.metrics):
        # clock steps, checkpoints that could not be written, decisions not stored.
        events = CounterMetricFamily(
            "rtrace_events", "Events counted by this server process", labels=["event"]
        )
        for name, value in sorted(counters().items()):
            if not name.endswith("_seconds"):
                events.add_metric([name], value)
        yield events
        largest = GaugeMetricFamily(
            "rtrace_clock_step_back_seconds", "The largest clock step back seen"
        )
        largest.add_metric([], counters().get("clock_step_back_seconds", 0.0))
        yield largest


router = APIRouter()


@router.get(
    "/metrics", response_class=PlainTextResponse, operation_id="metrics", responses=PROBLEMS
)
def metrics(request: Request) -> str:
    """Prometheus text: decisions by action and verdict, append latency, checkpoint, verify."""
    return served(request, ServerMetrics).text()
