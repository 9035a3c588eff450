"""The machine's limits that bound append rates: one fsync, and one thread handoff.

Every durable record waits for an fsync (shared by a batch), and every record but a batch's
leader waits for a handoff from the leader thread under the GIL. Both are measured here so the
append figures in BENCHMARKS.md can be read against them.

    python bench/bench_limits.py
"""

from __future__ import annotations

import _thread
import os
import tempfile
import threading
import time

N = 3000


def fsync_cost() -> float:
    """Microseconds for one 450-byte append plus fsync."""
    fd, path = tempfile.mkstemp()
    line = b"x" * 450 + b"\n"
    start = time.perf_counter()
    for _ in range(N):
        os.write(fd, line)
        os.fsync(fd)
    elapsed = time.perf_counter() - start
    os.close(fd)
    os.unlink(path)
    return elapsed / N * 1e6


def handoff_cost() -> float:
    """Microseconds for a ping-pong between two threads blocking on locks (two handoffs)."""
    ping, pong = _thread.allocate_lock(), _thread.allocate_lock()
    ping.acquire()
    pong.acquire()

    def other() -> None:
        for _ in range(N):
            ping.acquire()
            pong.release()

    thread = threading.Thread(target=other)
    thread.start()
    start = time.perf_counter()
    for _ in range(N):
        ping.release()
        pong.acquire()
    elapsed = time.perf_counter() - start
    thread.join()
    return elapsed / N * 1e6


def cpu_rate(threads: int, seconds: float = 2.0) -> float:
    """Validations per second (``prepare``, pure Python and C, no I/O) from ``threads`` threads."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    from reasoning_trace.record import prepare

    votes = {v: {"passed": True, "reason": "ok"} for v in ("a", "b", "c", "d")}
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def work(t: int) -> None:
        while time.perf_counter() < stop:
            prepare("upgrade_proposal", True, votes, {"agent_id": "x"}, "r")
            counts[t] += 1

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return sum(counts) / seconds


if __name__ == "__main__":
    print(f"write + fsync: {fsync_cost():.0f} us")
    print(f"thread ping-pong (2 handoffs): {handoff_cost():.0f} us")
    one, eight = cpu_rate(1), cpu_rate(8)
    print(
        f"pure CPU work (prepare), 1 thread: {one:,.0f}/s; 8 threads: {eight:,.0f}/s "
        f"({eight / one:.2f}x)"
    )
