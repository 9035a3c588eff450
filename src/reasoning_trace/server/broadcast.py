"""How event streams learn that the log grew: one follower thread per process.

``Broadcaster`` follows the log (``DecisionLog.follow``: appends by any process) and wakes
every subscribed stream. Subscribers get only a wake-up (an ``asyncio.Event``), never a queue
of records. The newest records' lines are kept once, for all streams, up to ``keep_bytes``; a
stream that needs older ones reads them from the log itself, a bounded batch at a time. So
memory grows neither with the number of streams nor with how far behind they are.
Tests: ``tests/test_server.py``, ``tests/test_hostile_http.py``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque

from ..log import DecisionLog

__all__ = ["Broadcaster"]


class Broadcaster:
    """Wakes every subscribed stream when the log grows; keeps the newest lines once."""

    def __init__(self, log: DecisionLog, keep_bytes: int = 4 << 20) -> None:
        self.log = log
        self.newest = len(log) - 1
        self.keep_bytes = keep_bytes
        self._recent: deque[tuple[int, bytes]] = deque()
        self._recent_bytes = 0
        self._events: set[asyncio.Event] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Follow the log in a thread, waking subscribers on ``loop``."""
        self._loop = loop
        threading.Thread(target=self._run, name="rtrace-broadcast", daemon=True).start()

    def stop(self) -> None:
        """Stop following (the thread ends at its next poll)."""
        self._stop.set()

    def _run(self) -> None:
        """Follow the log (in the thread), handing each new record to the event loop."""
        loop = self._loop
        assert loop is not None
        for d in self.log.follow(after_seq=self.newest, stop=self._stop.is_set):
            if loop.is_closed():
                return  # the server is shutting down: nobody is left to wake
            try:
                loop.call_soon_threadsafe(self._dispatch, d.seq, d.line)
            except RuntimeError:
                if loop.is_closed():  # closed between the check and the call
                    return
                raise

    def _dispatch(self, seq: int, line: bytes) -> None:
        """Keep a new record's line (on the event loop) and wake every subscriber."""
        if self._recent and self._recent[-1][0] != seq - 1:
            self._recent.clear()  # keep only a run of consecutive seqs
            self._recent_bytes = 0
        self._recent.append((seq, line))
        self._recent_bytes += len(line)
        while self._recent_bytes > self.keep_bytes and len(self._recent) > 1:
            self._recent_bytes -= len(self._recent.popleft()[1])
        self.newest = max(self.newest, seq)
        for event in self._events:
            event.set()

    def recent(self, start: int, budget: int) -> list[tuple[int, bytes]]:
        """Kept lines from seq ``start`` on, up to ``budget`` bytes; [] if ``start`` is not kept."""
        if not self._recent or not self._recent[0][0] <= start <= self._recent[-1][0]:
            return []
        out, size = [], 0
        for i in range(start - self._recent[0][0], len(self._recent)):
            out.append(self._recent[i])
            size += len(self._recent[i][1])
            if size >= budget:
                break
        return out

    def subscribe(self) -> asyncio.Event:
        """A new wake-up, set whenever the log grows."""
        event = asyncio.Event()
        self._events.add(event)
        return event

    def unsubscribe(self, event: asyncio.Event) -> None:
        """Stop waking ``event``."""
        self._events.discard(event)
