"""Append throughput and latency against the original module's way of writing.

The baseline does per record what the seed did: resolve the path, makedirs,
``json.dumps(sort_keys=True)``, open-append-close under a thread lock, no fsync. It runs in the
same process, on the same disk, with the same threads, right before each measured mode.

    python bench/bench_append.py [--seconds S] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from reasoning_trace import DecisionLog
from reasoning_trace.demo import VOTERS

VOTES = {v: {"passed": True, "reason": "within the agreed threshold"} for v in VOTERS}
SUBJECT = {"agent_id": "agent-3", "prompt_id": "p-00042", "goal_type": "plan", "version": "1.4.2"}


def baseline_writer(root: str) -> Callable[[int], None]:
    """The seed's record_decision, minus the event bus."""
    lock = threading.Lock()

    def record(i: int) -> None:
        entry = {
            "timestamp": time.time(),
            "datetime_utc": datetime.now(UTC).replace(tzinfo=None).isoformat() + "Z",
            "action": "upgrade_proposal",
            "approved": True,
            "votes": VOTES,
            "subject": SUBJECT,
            "reason": "unanimous",
        }
        path = os.path.join(root, datetime.now(UTC).strftime("%Y-%m-%d") + ".jsonl")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        line = json.dumps(entry, sort_keys=True)
        with lock, open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    return record


def ours(log: DecisionLog) -> Callable[[int], None]:
    """DecisionLog.record with the same decision."""

    def record(i: int) -> None:
        log.record("upgrade_proposal", True, VOTES, SUBJECT, "unanimous")

    return record


def rate(fn: Callable[[int], None], threads: int, seconds: float) -> tuple[float, list[float]]:
    """Records per second from ``threads`` threads for about ``seconds``; per-call latencies."""
    stop = time.perf_counter() + seconds
    counts = [0] * threads
    lat: list[list[float]] = [[] for _ in range(threads)]

    def work(t: int) -> None:
        n = 0
        mine = lat[t]
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            fn(n)
            mine.append(time.perf_counter() - t0)
            n += 1
        counts[t] = n

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    elapsed = time.perf_counter() - start
    return sum(counts) / elapsed, [x for xs in lat for x in xs]


def pct(values: list[float], q: float) -> float:
    """The q-quantile of ``values`` in milliseconds."""
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] * 1000


def main() -> None:
    """Run every mode beside a fresh baseline and print a Markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    base_dir = tempfile.mkdtemp(prefix="rtrace-bench-", dir=os.environ.get("BENCH_DIR"))
    rows = []
    for mode, threads in (
        ("batch", args.threads),
        ("never", args.threads),
        ("always", 1),
        ("batch", 1),
    ):
        bdir = os.path.join(base_dir, f"base-{mode}-{threads}")
        base, _ = rate(baseline_writer(bdir), threads, args.seconds)
        with DecisionLog(os.path.join(base_dir, f"ours-{mode}-{threads}"), sync=mode) as log:
            got, lat = rate(ours(log), threads, args.seconds)
        rows.append((mode, threads, base, got, got / base, pct(lat, 0.5), pct(lat, 0.99)))
    print("| sync | threads | baseline rec/s | ours rec/s | ratio | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for mode, threads, base, got, ratio, p50, p99 in rows:
        cells = f"{base:,.0f} | {got:,.0f} | {ratio:.2f}x | {p50:.3f} | {p99:.3f}"
        print(f"| {mode} | {threads} | {cells} |")
    shutil.rmtree(base_dir)


if __name__ == "__main__":
    main()
