"""The append path against SQLite and a raw ``write`` + ``fsync`` (issue 19, writer rows).

Every case runs in fresh child processes (``--child``), each waiting on a start line so
imports and opening do not count, in the same run and on the same disk:

* one thread: ``DecisionLog(sync="batch").record`` vs SQLite WAL ``synchronous=FULL`` (one
  ``INSERT`` + ``COMMIT`` per record, the same line) vs a raw ``write`` + ``fsync`` of it;
* 1, 8 and 32 threads in one process, ours vs SQLite (a connection per thread);
  (the 8-thread case is the "1 process x 8 threads" row);
* 4 processes x 2 threads on one root vs 1 process x 8 threads, ours and SQLite.

    python bench/bench_writer.py [--records N] [--rounds R] [--before SRC]

``--before SRC`` also runs our cases with ``PYTHONPATH=SRC`` (another checkout's ``src``),
interleaved with this checkout's round by round, so a noisy shared disk hits both alike.
Reports min/median/max over the rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "src")
VOTES = {v: {"passed": True, "reason": "within the agreed threshold"} for v in ("a", "b", "c")}
SUBJECT = {"agent_id": "agent-3", "prompt_id": "p-00042", "goal_type": "plan", "version": "1.4"}


def line_for(i: int) -> bytes:
    """A stored line of the same shape and size as ours (for SQLite and the raw baseline)."""
    return orjson.dumps(
        {
            "action": "upgrade_proposal",
            "approved": True,
            "datetime_utc": "2026-11-29T23:30:00.123456Z",
            "id": f"019ad1f0-0000-7000-8000-{i:012d}",
            "reason": "unanimous",
            "seq": i,
            "subject": SUBJECT,
            "timestamp": 1795476600.123456,
            "v": 1,
            "votes": VOTES,
        },
        option=orjson.OPT_SORT_KEYS,
    )


def run_threads(threads: int, count: int, work: object) -> tuple[float, float]:
    """Run ``work(t, i)`` ``count`` times in each of ``threads`` threads; (start, end) times."""
    assert callable(work)
    pool = [
        threading.Thread(target=lambda t=t: [work(t, i) for i in range(count)])
        for t in range(threads)
    ]
    start = time.time()
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return start, time.time()


def child(kind: str, root: str, threads: int, count: int) -> None:
    """One measured process: set up, say ready, wait for the go line, run, print times."""
    if kind == "ours":
        from reasoning_trace import DecisionLog

        log = DecisionLog(root, sync="batch")
        log.record("warm", True, {}, {})

        def work(t: int, i: int) -> None:
            log.record("upgrade_proposal", True, VOTES, SUBJECT, "unanimous")

    elif kind == "sqlite":
        local = threading.local()
        path = os.path.join(root, "log.db")

        def conn() -> sqlite3.Connection:
            c = getattr(local, "c", None)
            if c is None:
                c = local.c = sqlite3.connect(path, isolation_level=None, timeout=600)
                c.execute("PRAGMA synchronous=FULL")
            return c

        def work(t: int, i: int) -> None:
            c = conn()
            c.execute("BEGIN IMMEDIATE")
            c.execute("INSERT INTO log(line) VALUES (?)", (line_for(i),))
            c.execute("COMMIT")

        work(0, 0)
    else:  # raw: one write + fsync of the line per record, one thread
        fd = os.open(os.path.join(root, "raw"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        data = line_for(0) + b"\n"

        def work(t: int, i: int) -> None:
            os.write(fd, data)
            os.fsync(fd)

    print("ready", flush=True)
    sys.stdin.readline()
    start, end = run_threads(threads, count, work)
    print(start, end, flush=True)


def measure(kind: str, src: str, procs: int, threads: int, count: int, base: str) -> float:
    """Records a second over ``procs`` processes x ``threads`` threads (a fresh root)."""
    root = tempfile.mkdtemp(dir=base)
    if kind == "sqlite":
        with sqlite3.connect(os.path.join(root, "log.db")) as c:
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY, line BLOB NOT NULL)")
    env = dict(os.environ, PYTHONPATH=src, REASONING_TRACE_KEY=os.path.join(base, "bench.key"))
    cmd = [sys.executable, __file__, "--child", kind, root, str(threads), str(count)]
    children = [
        subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        for _ in range(procs)
    ]
    for proc in children:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in children:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    times = []
    for proc in children:
        out, _ = proc.communicate()
        assert proc.returncode == 0
        times.append([float(x) for x in out.split()])
    shutil.rmtree(root, ignore_errors=True)
    elapsed = max(t[1] for t in times) - min(t[0] for t in times)
    return procs * threads * count / elapsed


def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    """``min / median / max`` of the rounds."""
    lo, mid, hi = min(values), statistics.median(values), max(values)
    return f"{fmt.format(lo)} / {fmt.format(mid)} / {fmt.format(hi)}"


def main() -> None:
    """Print one markdown table per section, medians and spreads over ``--rounds``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1000, help="records a thread, one thread")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", help="another checkout's src, measured alongside")
    parser.add_argument("--only", help="run only the cases whose label contains this")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, root, threads, count = args.child
        child(kind, root, int(threads), int(count))
        return
    base = tempfile.mkdtemp(dir=os.environ.get("BENCH_DIR"))
    n = args.records
    # Within a round, one case is measured for every kind back to back (and the raw baseline
    # right after), and each kind's 1 x 8 and 4 x 2 runs are adjacent: a ratio taken within
    # one round compares runs seconds apart on a disk others share.
    cases = [  # (label, procs, threads, records a thread)
        ("1 thread", 1, 1, n),
        ("32 threads", 1, 32, max(1, n // 8)),
        ("1 process x 8 threads", 1, 8, max(1, n // 2)),
        ("4 processes x 2 threads", 4, 2, max(1, n // 2)),
    ]
    if args.only:
        cases = [c for c in cases if args.only in c[0] or c[0] == "1 thread"]
    kinds = [("after", "ours", os.path.abspath(SRC)), ("sqlite", "sqlite", SRC)]
    if args.before:
        kinds.insert(0, ("before", "ours", os.path.abspath(args.before)))
    got: dict[tuple[str, str], list[float]] = {}
    pair = [c for c in cases if "x" in c[0]]
    for _ in range(args.rounds):
        for label, procs, threads, count in [c for c in cases if "x" not in c[0]]:
            for name, kind, src in kinds:
                rate = measure(kind, src, procs, threads, count, base)
                got.setdefault((name, label), []).append(rate)
            if label == "1 thread":
                rate = measure("raw", SRC, 1, 1, n, base)
                got.setdefault(("raw", "1 thread"), []).append(rate)
        for name, kind, src in kinds:
            for label, procs, threads, count in pair:
                rate = measure(kind, src, procs, threads, count, base)
                got.setdefault((name, label), []).append(rate)
    shutil.rmtree(base, ignore_errors=True)
    names = [name for name, _, _ in kinds]
    print(f"records/s, min / median / max of {args.rounds} rounds\n")
    print("| case | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, *_ in cases:
        print(f"| {label} | " + " | ".join(spread(got[(x, label)]) for x in names) + " |")
    print(f"| raw write + fsync, 1 thread | {spread(got[('raw', '1 thread')])} |")
    print("\nratios within each round, min / median / max:\n")

    def ratio(a: tuple[str, str], b: tuple[str, str]) -> str:
        return spread([x / y for x, y in zip(got[a], got[b], strict=True)], "{:.2f}x")

    one, many = "1 thread", ("4 processes x 2 threads", "1 process x 8 threads")
    for x in names:
        if x != "sqlite":
            print(f"- {x}, 1 thread vs SQLite: {ratio((x, one), ('sqlite', one))}")
            print(f"- {x}, 1 thread vs raw write + fsync: {ratio((x, one), ('raw', one))}")
        if (x, many[0]) in got:
            print(f"- {x}, 4 x 2 vs 1 x 8: {ratio((x, many[0]), (x, many[1]))}")
    if args.before:
        print(f"- after vs before, 1 thread: {ratio(('after', one), ('before', one))}")
        if ("after", many[0]) in got:
            print(f"- after vs before, 4 x 2: {ratio(('after', many[0]), ('before', many[0]))}")


if __name__ == "__main__":
    main()
