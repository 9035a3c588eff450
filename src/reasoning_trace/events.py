"""Events: decisions delivered to subscribers after they are durable (SPEC sections 5 and 7).

Every subscriber reads the log itself from a cursor of its own (``Subscription``), so one that
is slow, raises or hangs never blocks the writer nor another subscriber, and loses nothing: it
is retried with backoff and catches up once fixed. What leaves the process passes the consent
gate, a callable that maps a decision to what may be shared (or ``None`` to share nothing);
the default shares the summary of SPEC 5. ``bus`` is the product's set of subscribers that
``record_decision(..., event_bus_emit=True)`` feeds; ``DecisionLog.subscribe`` is the same
delivery for one log.
Tests: ``tests/test_events.py``, ``tests/test_compat.py``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import platformdirs

from .errors import UsageError
from .record import Decision
from .retry import retrying

__all__ = [
    "ConsentGate",
    "EventBus",
    "Subscriber",
    "Subscription",
    "bus",
    "cursor_path",
    "decision_summary",
    "set_consent_gate",
]

logger = logging.getLogger("reasoning_trace")

Subscriber = Callable[[dict[str, Any]], object]
ConsentGate = Callable[[Decision], "dict[str, Any] | None"]
SUMMARY_KEYS = ("agent_id", "prompt_id", "goal_type", "version")


def decision_summary(decision: Decision) -> dict[str, Any]:
    """The event of SPEC 5: kind, action, verdict and a summary of the subject."""
    return {
        "kind": "consensus_decision",
        "action": decision.action,
        "approved": decision.approved,
        "subject_summary": {k: v for k, v in decision.subject.items() if k in SUMMARY_KEYS},
    }


class _Entry:
    """One bus subscriber: its callback, its durable name (if any), its feeds."""

    def __init__(self, callback: Subscriber, name: str | None) -> None:
        self.callback = callback
        self.name = name
        self.feeds: dict[int, Subscription] = {}  # id(log) -> its delivery from that log


class EventBus:
    """The product's subscribers: each receives every decision of the logs the bus is attached
    to (``record_decision``'s logs), delivered from the log by a ``Subscription`` of its own:
    after it is durable, at-least-once, retried when the subscriber raises, and never blocking
    the writer or another subscriber. A ``name`` makes the cursor durable across restarts
    (``cursor_path(root, "bus-<name>")``); unnamed subscribers start from the moment they subscribe.
    Decisions recorded with ``event_bus_emit=False`` are withheld (``quiet``).
    """

    QUIET_PRUNE = 1024

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[_Entry] = []
        self._logs: list[Any] = []
        self._quiet: dict[str, int] = {}  # id -> seq (-1 until stored) of withheld decisions

    def subscribe(self, callback: Subscriber, *, name: str | None = None) -> Callable[[], None]:
        """Deliver every later decision to ``callback``; returns a function that
        unsubscribes."""
        entry = _Entry(callback, name)
        with self._lock:
            self._entries = [*self._entries, entry]
            for log in self._logs:
                self._feed(entry, log)

        def unsubscribe() -> None:
            with self._lock:
                self._entries = [e for e in self._entries if e is not entry]
                feeds = list(entry.feeds.values())
                entry.feeds.clear()
            for feed in feeds:
                feed.stop()

        return unsubscribe

    @property
    def has_subscribers(self) -> bool:
        """Whether anyone is subscribed."""
        return bool(self._entries)

    def attach(self, log: Any) -> None:
        """Deliver ``log``'s decisions from now on to every subscriber."""
        with self._lock:
            if any(known is log for known in self._logs):
                return
            self._logs.append(log)
            for entry in self._entries:
                self._feed(entry, log)

    def detach(self, log: Any) -> None:
        """Stop delivering ``log``'s decisions (before it closes); cursors are saved."""
        with self._lock:
            self._logs = [known for known in self._logs if known is not log]
            feeds = [e.feeds.pop(id(log)) for e in self._entries if id(log) in e.feeds]
        for feed in feeds:
            feed.stop()

    def _feed(self, entry: _Entry, log: Any) -> None:
        name = f"bus-{entry.name}" if entry.name else f"bus-{id(entry):x}"
        entry.feeds[id(log)] = Subscription(
            log, name, entry.callback, gate=self._gate, persist=entry.name is not None
        )

    def _gate(self, decision: Decision) -> dict[str, Any] | None:
        if decision.id in self._quiet:
            return None
        try:
            return _gate(decision)
        except Exception:  # a failing gate shares nothing; the decision is already durable
            logger.exception("reasoning_trace: consent gate failed; nothing was shared")
            return None

    def quiet(self, decision_id: str) -> None:
        """Withhold the decision that will be recorded with this id (``event_bus_emit=False``)."""
        with self._lock:
            self._quiet[decision_id] = -1

    def stored(self, decision_id: str, seq: int | None) -> None:
        """The withheld decision is stored as ``seq`` (``None``: it was not recorded)."""
        with self._lock:
            if seq is None:
                self._quiet.pop(decision_id, None)
                return
            self._quiet[decision_id] = seq
            if len(self._quiet) > self.QUIET_PRUNE:
                # Forget what every feed is past (logs differ, so: past every cursor).
                cursors = [f.cursor for e in self._entries for f in e.feeds.values()]
                low = min(cursors, default=seq)
                self._quiet = {k: v for k, v in self._quiet.items() if v < 0 or v > low}


bus = EventBus()
_gate: ConsentGate = decision_summary


def set_consent_gate(gate: ConsentGate | None) -> None:
    """Replace what leaves the process for each decision (``None`` restores the default).
    The gate runs when a decision is delivered."""
    global _gate
    _gate = gate or decision_summary


def cursor_path(root: Path, name: str) -> Path:
    """Where subscriber ``name`` of the log at ``root`` keeps its cursor.

    Not under the root: everything there but day files and checkpoints is derived and may be
    deleted (SPEC 2), while a cursor is state that cannot be rebuilt. So it lives in
    ``$REASONING_TRACE_CURSORS`` if set, else in the per-user state directory, under a name
    derived from the root's absolute path.
    """
    base = os.environ.get("REASONING_TRACE_CURSORS")
    folder = (
        Path(base).expanduser().absolute()
        if base
        else Path(platformdirs.user_state_dir("reasoning-trace", appauthor=False)) / "cursors"
    )
    absolute = str(Path(root).absolute())
    tag = hashlib.sha256(absolute.encode()).hexdigest()[:16]
    return folder / f"{Path(absolute).name or 'root'}-{tag}" / name


class Subscription:
    """Durable, at-least-once delivery of a log's decisions to one named subscriber.

    Decisions come from the log itself (not from the writer), so a subscriber that is slow,
    raises or hangs never blocks a write nor loses an event: its own thread follows the log
    from its cursor, calls ``callback`` with what the consent gate lets through, and advances
    the cursor only after the callback returned. A callback that raises is retried on the same
    decision with backoff (up to ``max_backoff`` seconds), so once it is fixed it catches up.
    The cursor (``cursor_path(root, name)``) is written at most every ``save_every``
    seconds and on stop; after a crash delivery resumes from it (at-least-once). With
    ``persist=False`` the cursor lives in memory only (a subscriber that starts anew each run).
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
        persist: bool = True,
    ) -> None:
        if not name or any(c in name for c in "/\\\0") or name.startswith("."):
            raise UsageError(f"a subscriber name must be a plain file name, not {name!r}")
        self.name = name
        self.callback = callback
        self.gate = gate or decision_summary
        self._log = log
        self._path = cursor_path(log.root, name)
        self._save_every = save_every
        self._max_backoff = max_backoff
        self._stop = threading.Event()
        self._persist = persist
        saved = self._load() if persist else None
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
        if not self._persist:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(f"{self.cursor}\n")
        os.replace(tmp, self._path)

    def _run(self) -> None:
        saved_at = time.monotonic()
        for decision in self._log.follow(after_seq=self.cursor, stop=self._stop.is_set):
            self._deliver(decision)
            if self._stop.is_set():
                break
            self.cursor = decision.seq
            if time.monotonic() - saved_at >= self._save_every:
                self._save()
                saved_at = time.monotonic()
        self._save()

    def _deliver(self, decision: Decision) -> None:
        """Hand ``decision`` over until the subscriber takes it or the subscription stops,
        waiting 0.01 s after a failure, twice as long after each next one (up to
        ``max_backoff``). The first try is a plain call: a retrier is built only for a
        subscriber that failed."""
        if self._stop.is_set():
            return
        try:
            self._hand_over(decision)
            return
        except Exception as exc:  # noqa: BLE001 -- counted and logged; retried below
            failed = exc
        tries = retrying(first=0.01, most=self._max_backoff, sleep=self._stop.wait, failed=failed)
        for attempt in tries:
            if self._stop.is_set():
                return
            with attempt:
                self._hand_over(decision)

    def _hand_over(self, decision: Decision) -> None:
        """Pass ``decision`` through the gate to the callback. A subscriber's failure is its
        own: counted, logged (the first and every 100th), and raised to be retried."""
        try:
            event = self.gate(decision)
            if event is not None:
                self.callback(event)
        except Exception:
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                logger.exception(
                    "reasoning_trace: subscriber %s failed on seq %d (%d failures); retrying",
                    self.name,
                    decision.seq,
                    self.failures,
                )
            raise

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop delivering and save the cursor (a callback still running is not interrupted)."""
        self._stop.set()
        self._thread.join(timeout)
