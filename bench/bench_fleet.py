"""Fleet reads at scale, against a real nats-server started by this script on loopback.

A stream holds a year of four nodes' decisions (``--records`` in all, spread evenly over 365
days, ~420-byte records, published straight into the stream: replication's own rate is
``bench_replicate.py``'s subject). Then, ``--rounds`` times each:

1. the stream path (no index): ``stats`` over everything (a full read), ``query --node``
   (one subject), ``query --since 7d`` (binary search per node), ``query --limit 5``
   newest first, ``tail -n 20``;
2. the fleet index: a cold build (catch-up from nothing) and warm ``stats``, ``stats
   --node``, ``query --action --limit 5`` and ``query --since 7d``;
3. peak memory (max RSS of a fresh process) of ``rtrace --source … stats`` without and
   with the index, and of ``query --format json`` of everything (streamed to /dev/null).

Prints min / median / max per measure.

    python bench/bench_fleet.py [--records 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent))

import nats  # noqa: E402
from tests.natsserver import NatsServer  # noqa: E402

from reasoning_trace.fleet import Fleet  # noqa: E402
from reasoning_trace.jetstream import decision_subject, stream_config  # noqa: E402
from reasoning_trace.query import Filter  # noqa: E402
from reasoning_trace.record import format_utc  # noqa: E402

NODES = ("gate-1", "gate-2", "gate-3", "gate-4")
YEAR = 365 * 86400
ACTIONS = ("upgrade_proposal", "rollback", "halt", "promote")


def line(node: str, seq: int, when: float) -> bytes:
    """One stored record line of ``node``, as a writer would have made it."""
    micros = round(when * 1_000_000)
    record = {
        "v": 1,
        "seq": seq,
        "id": f"{node}-{seq:08d}",
        "timestamp": micros / 1_000_000,
        "datetime_utc": format_utc(micros),
        "action": ACTIONS[seq % 4] if seq % 10 else "rollback",
        "approved": seq % 5 != 0,
        "votes": {
            "safety": {"passed": seq % 5 != 0, "reason": "jailbreak rate within threshold"},
            "cost": {"passed": True, "reason": "within budget"},
            "ops": {"passed": True, "reason": "on call agrees"},
        },
        "subject": {"agent_id": f"agent-{seq % 7}", "version": "1.4.2", "prompt_id": f"p{seq}"},
        "reason": "a realistic reason of a few words",
        "node": node,
    }
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


async def publish(url: str, total: int, end: float) -> None:
    """A year of four nodes' records, up to ``end``, interleaved in time, many in flight."""
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=30)
    await js.add_stream(stream_config())
    per_node = total // len(NODES)
    step = YEAR / per_node
    start = end - YEAR
    pending: list[asyncio.Future[object]] = []
    for i in range(per_node):
        for k, node in enumerate(NODES):
            when = start + i * step + k * step / len(NODES)
            pending.append(
                asyncio.ensure_future(js.publish(decision_subject(node), line(node, i, when)))
            )
        if len(pending) >= 2000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    await nc.close()


def timed(fn: Callable[[], object], rounds: int) -> tuple[list[float], object]:
    """Seconds per round of ``fn()`` and its last result."""
    times, result = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return times, result


def fmt(times: list[float]) -> str:
    """min / median / max in seconds."""
    return f"{min(times):.3f} / {statistics.median(times):.3f} / {max(times):.3f} s"


def peak_rss(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of ``rtrace`` with ``args`` in a fresh process (VmHWM: unlike
    ru_maxrss, it does not carry the forking parent's peak over the exec)."""
    code = (
        "import sys, time\n"
        "from reasoning_trace.cli import main\n"
        f"sys.argv = ['rtrace', *{args!r}]\n"
        "t = time.perf_counter()\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0].split()[1]\n"
        "print(hwm, time.perf_counter() - t, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        check=True,
    )
    kb, secs = done.stderr.strip().splitlines()[-1].split()
    return int(kb) / 1024, float(secs)


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rtrace-bench-fleet-"))
    srv = NatsServer(work / "nats").start()
    env = dict(os.environ, REASONING_TRACE_CACHE=str(work / "cache"))
    env["PYTHONPATH"] = str(HERE.parent / "src")
    try:
        t = time.perf_counter()
        now = time.time()
        asyncio.run(publish(srv.url, args.records, now))
        print(
            f"{args.records:,} records of {len(NODES)} nodes over a year published in "
            f"{time.perf_counter() - t:.1f} s"
        )
        week = round((now - 7 * 86400) * 1_000_000)
        n = args.rounds
        with Fleet(srv.url) as fleet:
            rows = [
                ("stream: stats, everything", lambda: fleet.stats().total),
                (
                    "stream: query --node gate-2 (count)",
                    lambda: len(fleet.query(Filter(node="gate-2"))),
                ),
                ("stream: query --since 7d", lambda: len(fleet.query(Filter(since_us=week)))),
                (
                    "stream: query --limit 5 (newest, by binary search: tail)",
                    lambda: len(fleet.recent(5)),
                ),
                ("stream: tail -n 20", lambda: len(fleet.recent(20))),
            ]
            for name, fn in rows:
                times, result = timed(fn, n)
                print(f"{name}: {fmt(times)} ({result:,} records)")
        cache = work / "bench-index.sqlite"
        cold = []
        for _ in range(n):
            if cache.exists():
                os.unlink(cache)
            with Fleet(srv.url, index=cache) as fleet:
                t = time.perf_counter()
                assert fleet._index is not None
                fleet._index.catch_up()
                cold.append(time.perf_counter() - t)
        rate = args.records / statistics.median(cold)
        size = cache.stat().st_size / 1e6
        print(f"index: cold build: {fmt(cold)} ({rate:,.0f} records/s; {size:,.0f} MB)")
        with Fleet(srv.url, index=cache) as fleet:
            rows = [
                ("index: stats, everything (warm)", lambda: fleet.stats().total),
                ("index: stats --node gate-2", lambda: fleet.stats(Filter(node="gate-2")).total),
                (
                    "index: query --action rollback --limit 5",
                    lambda: len(fleet.query(Filter(action="rollback"), limit=5, newest_first=True)),
                ),
                ("index: query --since 7d", lambda: len(fleet.query(Filter(since_us=week)))),
                (
                    "index: query --voter safety --subject agent_id=agent-3 --limit 50",
                    lambda: len(
                        fleet.query(
                            Filter(voter="safety", subject={"agent_id": "agent-3"}),
                            limit=50,
                            newest_first=True,
                        )
                    ),
                ),
            ]
            for name, fn in rows:
                times, result = timed(fn, n)
                print(f"{name}: {fmt(times)} ({result:,} records)")
        src = ["--source", srv.url]
        shutil.rmtree(work / "cache", ignore_errors=True)
        for label, cmd in (
            ("rtrace stats (index, cold, in a fresh process)", [*src, "stats", "--json"]),
            ("rtrace stats (index, warm)", [*src, "stats", "--json"]),
            (
                "rtrace query --format json, everything (index, streamed)",
                [*src, "query", "--format", "json"],
            ),
        ):
            mb, secs = peak_rss(cmd, env)
            print(f"{label}: peak RSS {mb:,.0f} MB, {secs:.2f} s")
        code = (
            "import time\n"
            "from reasoning_trace.fleet import Fleet\n"
            "t = time.perf_counter()\n"
            f"with Fleet({srv.url!r}) as f:\n    n = f.stats().total\n"
            "hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0].split()[1]\n"
            "print(hwm, time.perf_counter() - t)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        kb, secs = out.stdout.split()
        mb = int(kb) / 1024
        print(f"Fleet.stats() without the index (a full read): peak RSS {mb:,.0f} MB, {secs} s")
    finally:
        srv.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
