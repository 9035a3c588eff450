"""The writer's rate with stuck subscribers: 10,000 decisions with none, and with one that
raises on every call and one that hangs, in the same script (``sync="batch"``, 8 threads).

    python bench/bench_events.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from reasoning_trace import DecisionLog

COUNT, THREADS = 10_000, 8


def rate(subscribed: bool) -> float:
    """Decisions per second for COUNT decisions from THREADS threads."""
    release = threading.Event()

    def raises(event: object) -> None:
        raise RuntimeError("down")

    def hangs(event: object) -> None:
        release.wait()

    with DecisionLog(tempfile.mkdtemp(), sync="batch") as log:
        subs = (
            [log.subscribe("raises", raises, start=-1), log.subscribe("hangs", hangs, start=-1)]
            if subscribed
            else []
        )

        def work() -> None:
            for i in range(COUNT // THREADS):
                log.record("a", True, {"v": {"passed": True}}, {"i": i})

        pool = [threading.Thread(target=work) for _ in range(THREADS)]
        start = time.perf_counter()
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        elapsed = time.perf_counter() - start
        release.set()
        for sub in subs:
            sub.stop()
    return COUNT / elapsed


if __name__ == "__main__":
    base, stuck = rate(False), rate(True)
    again = rate(False)
    print("| writer, 10,000 decisions, 8 threads, batch | decisions/s |")
    print("|---|---|")
    print(f"| no subscribers | {base:,.0f} (again: {again:,.0f}) |")
    print(
        f"| a raising and a hanging subscriber | {stuck:,.0f} "
        f"({stuck / ((base + again) / 2):.2f}x) |"
    )
