"""One thread recording in a loop, the case most gates have: microseconds a record per sync
mode, against a raw ``write`` + ``fsync`` of the same line in the same run, and the first
``read_recent(200)`` of a fresh process on a 100,000-record log.

    python bench/bench_one_thread.py [--records N] [--rounds R]

Run it from two checkouts alternately (``PYTHONPATH=<checkout>/src``) to compare them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from reasoning_trace import DecisionLog

VOTES = {"safety": {"passed": True, "reason": "ok"}, "cost": {"passed": True, "reason": "ok"}}


def per_record(sync: str, n: int, base: str) -> float:
    """Microseconds a ``record`` under ``sync`` on a fresh log (after one warm-up record)."""
    root = tempfile.mkdtemp(dir=base)
    with DecisionLog(root, sync=sync) as log:
        log.record("warm", True, {}, {})
        t = time.perf_counter()
        for i in range(n):
            log.record("upgrade", True, VOTES, {"agent_id": "a", "i": i})
        return (time.perf_counter() - t) / n * 1e6


def raw_fsync(n: int, base: str) -> float:
    """Microseconds an ``os.write`` + ``os.fsync`` of one record-sized line (the baseline)."""
    line = b'{"action":"upgrade","approved":true,' + b"x" * 300 + b"}\n"
    fd = os.open(os.path.join(tempfile.mkdtemp(dir=base), "raw"), os.O_WRONLY | os.O_CREAT)
    try:
        t = time.perf_counter()
        for _ in range(n):
            os.write(fd, line)
            os.fsync(fd)
        return (time.perf_counter() - t) / n * 1e6
    finally:
        os.close(fd)


RECENT = """
import time
t = time.perf_counter()
from reasoning_trace import DecisionLog
log = DecisionLog({root!r}, create=False)
t1 = time.perf_counter()
log.recent(200)
print((time.perf_counter() - t1) * 1e3, (t1 - t) * 1e3)
"""


def first_recent(base: str) -> tuple[float, float]:
    """(ms of the first ``read_recent(200)``, ms of import + open) in a fresh process."""
    root = os.path.join(base, "recent")
    if not os.path.isdir(root):
        with DecisionLog(root, sync="never") as log:
            for i in range(100_000):
                log.record("upgrade", True, VOTES, {"agent_id": "a", "i": i})
    out = subprocess.run(
        [sys.executable, "-c", RECENT.format(root=root)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    """Print one table: medians of ``--rounds`` rounds."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = tempfile.mkdtemp(dir=os.environ.get("BENCH_DIR"))
    os.environ.setdefault("REASONING_TRACE_KEY", os.path.join(base, "bench.key"))
    rows = []
    raw = statistics.median(raw_fsync(args.records, base) for _ in range(args.rounds))
    for sync, n in (("always", args.records), ("batch", args.records), ("never", 20_000)):
        us = statistics.median(per_record(sync, n, base) for _ in range(args.rounds))
        ratio = f"{raw / us:.2f}x" if sync != "never" else "(no fsync)"
        rows.append(f"| `{sync}` | {us:.0f} µs | {raw:.0f} µs | {ratio} |")
    recent = [first_recent(base) for _ in range(args.rounds)]
    print("| sync | ours, a record | raw write + fsync | ratio |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    ms, start = statistics.median(r[0] for r in recent), statistics.median(r[1] for r in recent)
    print(f"\nfirst read_recent(200), 100,000 records: {ms:.2f} ms (import + open {start:.0f} ms)")


if __name__ == "__main__":
    main()
