"""Replication to JetStream on loopback, against real nats-servers started by this script.

1. Throughput: a log of N records shipped by ``Replicator`` (one publish in flight, each
   expecting the subject's last message), against the same lines published raw in the same
   script (serially, without the expectation header): single node, and three-node R3.
   Also a ``DecisionLog`` on a ``JetStreamStore`` (a writer without a disk), one thread.
2. Lag at a steady 1,000 decisions/s: a writer records at that pace (``sync="batch"``) while
   ``rtrace replicate`` runs as its own process; a stream consumer in this script takes each
   record's lag as (time it arrives) - (its timestamp). p50/p99/max.
3. Reading: one node's replicated records delivered bare, checked by ``verify_node``,
   aggregated by ``Fleet.stats``; and ``tail -n 20`` (``Fleet.recent``) over the fleet.
4. Catch-up: the server is killed for ``--outage`` seconds (60 by default) while the writer
   goes on at 1,000/s; then it is restarted, and the time until the stream holds everything
   gives the catch-up rate.

    python bench/bench_replicate.py [--records 20000] [--outage 60] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent))

import nats  # noqa: E402
from nats.js.api import ConsumerConfig, DeliverPolicy  # noqa: E402
from tests.natsserver import Cluster, NatsServer  # noqa: E402

from reasoning_trace import DecisionLog  # noqa: E402
from reasoning_trace.fleet import Fleet  # noqa: E402
from reasoning_trace.jetstream import decision_subject, stream_config  # noqa: E402
from reasoning_trace.replicate import Replicator  # noqa: E402


def fill(root: Path, n: int) -> list[bytes]:
    with DecisionLog(str(root), node="bench", sync="never") as log:
        for i in range(n):
            log.record(
                "upgrade",
                i % 5 != 0,
                {
                    "safety": {"passed": i % 5 != 0},
                    "cost": {"passed": True},
                    "ops": {"passed": True},
                },
                {"agent_id": f"agent-{i % 7}", "version": "1.4.2", "i": i},
                "a realistic reason of a few words",
            )
        return [d.line for d in log.read(0)]


def raw_rate(url: str, lines: list[bytes], replicas: int) -> float:
    async def run() -> float:
        nc = await nats.connect(url.split(","))
        js = nc.jetstream(timeout=5)
        config = stream_config("RAW", replicas)
        config.subjects = ["raw.>"]  # the same settings on subjects of its own
        await js.add_stream(config)
        t = time.perf_counter()
        for line in lines:
            await js.publish("raw.decision", line, stream="RAW")
        elapsed = time.perf_counter() - t
        await nc.close()
        return len(lines) / elapsed

    return asyncio.run(run())


def store_rate(url: str, n: int, replicas: int, threads: int = 1) -> float:
    """Decisions/s recorded by a DecisionLog on a JetStreamStore (no disk)."""
    from reasoning_trace.jetstream_store import JetStreamStore
    from reasoning_trace.note import Signer

    store = JetStreamStore(
        url,
        f"stateless-r{replicas}-t{threads}",
        key=Signer.generate("bench/stateless"),
        replicas=replicas,
    )
    with DecisionLog(store=store) as log:

        def work(k: int) -> None:
            for i in range(k, n, threads):
                log.record(
                    "upgrade",
                    i % 5 != 0,
                    {"safety": {"passed": i % 5 != 0}, "cost": {"passed": True}},
                    {"agent_id": f"agent-{i % 7}", "version": "1.4.2", "i": i},
                    "a realistic reason of a few words",
                )

        workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        t = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return n / (time.perf_counter() - t)


def reading(url: str, node: str, n: int) -> None:
    """Fleet reads of one node's n replicated records, against bare message delivery."""
    from reasoning_trace.verify_replica import verify_node

    with Fleet(url) as fleet:
        t = time.perf_counter()
        assert sum(1 for _ in fleet.messages(decision_subject(node))) == n
        raw = n / (time.perf_counter() - t)
        t = time.perf_counter()
        assert fleet.stats().total >= n
        stats = n / (time.perf_counter() - t)
        t = time.perf_counter()
        fleet.recent(20)
        recent_ms = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    report = verify_node(url, node, trust_stream_keys=True, allow_open_server=True)
    assert report.ok and report.records == n
    verify = n / (time.perf_counter() - t)
    print(
        f"reading {n:,} replicated records: delivery {raw:,.0f}/s; verify --source "
        f"{verify:,.0f}/s ({verify / raw:.2f}); stats {stats:,.0f}/s ({stats / raw:.2f}); "
        f"tail -n 20 {recent_ms:.1f} ms"
    )


def throughput(url: str, base: Path, n: int, replicas: int) -> tuple[float, float]:
    root = base / f"log-r{replicas}"
    lines = fill(root, n)
    raw = raw_rate(url, lines, replicas)
    t = time.perf_counter()
    status = Replicator(root, url, node=f"r{replicas}", replicas=replicas).run(until_caught_up=True)
    elapsed = time.perf_counter() - t
    assert status.records == n
    return n / elapsed, raw


class Pacer(threading.Thread):
    """Records decisions at a steady rate until stopped."""

    def __init__(self, root: Path, per_second: float) -> None:
        super().__init__(daemon=True)
        self.root, self.period, self.count = root, 1.0 / per_second, 0
        self.stop = threading.Event()

    def run(self) -> None:
        with DecisionLog(str(self.root), node="paced") as log:
            start = time.monotonic()
            while not self.stop.is_set():
                log.record("upgrade", True, {"v": {"passed": True}}, {"i": self.count})
                self.count += 1
                wait = start + self.count * self.period - time.monotonic()
                if wait > 0:
                    time.sleep(wait)


def lag(url: str, base: Path, seconds: float, outage: float, server: NatsServer | None) -> None:
    root = base / "paced"
    DecisionLog(str(root), node="paced").close()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reasoning_trace",
            "--dir",
            str(root),
            "replicate",
            "--nats",
            url,
            "--node",
            "paced",
        ],
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(HERE.parent / "src")},
    )
    lags: list[float] = []

    async def consume(stop: threading.Event) -> None:
        nc = await nats.connect(url.split(","))
        js = nc.jetstream()
        while True:
            try:
                await js.stream_info("RTRACE")
                break
            except Exception:  # noqa: BLE001 -- the replicator has not created it yet
                await asyncio.sleep(0.05)
        sub = await js.subscribe(
            decision_subject("paced"),
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
        )
        import orjson

        while not stop.is_set():
            try:
                msg = await sub.next_msg(timeout=0.2)
            except nats.errors.TimeoutError:
                continue
            lags.append(time.time() - orjson.loads(msg.data)["timestamp"])
        await nc.close()

    stop_consumer = threading.Event()
    consumer = threading.Thread(target=lambda: asyncio.run(consume(stop_consumer)), daemon=True)
    consumer.start()
    time.sleep(1.0)  # the replicator and the consumer connect before the pace starts
    pacer = Pacer(root, 1000)
    pacer.start()
    time.sleep(seconds)
    stop_consumer.set()
    consumer.join()
    steady = sorted(lags[len(lags) // 10 :])  # the first tenth warms up
    print(
        f"lag at 1,000/s for {seconds:g} s ({len(steady)} records): "
        f"p50 {statistics.median(steady) * 1e3:.1f} ms, "
        f"p99 {steady[int(len(steady) * 0.99)] * 1e3:.1f} ms, max {steady[-1] * 1e3:.1f} ms; "
        f"writer pace {pacer.count / (seconds):.0f}/s"
    )

    if server is None or not outage:
        pacer.stop.set()
        pacer.join()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        return
    # Outage: the server dies, the writer goes on, the server comes back.
    server.kill(signal.SIGKILL)
    t0 = time.monotonic()
    before = pacer.count
    time.sleep(outage)
    backlog = pacer.count - before
    server.start()
    t_back = time.monotonic()
    while True:
        with Fleet(url) as fleet:
            have = fleet.subjects(decision_subject("paced")).get(decision_subject("paced"), 0)
        if have >= pacer.count - 50:  # caught up with the (still running) writer
            break
        time.sleep(0.1)
    took = time.monotonic() - t_back
    pacer.stop.set()
    pacer.join()
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    print(
        f"outage of {time.monotonic() - t0 - took:.0f} s: backlog {backlog} records, caught up "
        f"{took:.1f} s after the server returned while the writer went on at 1,000/s: "
        f"{(backlog + took * 1000) / took:,.0f} records/s shipped during catch-up"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--outage", type=float, default=60.0)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="rtrace-bench-"))

    single = NatsServer(base / "single").start()
    try:
        print("single node:", end=" ")
        rate, raw = throughput(single.url, base / "t1", args.records, 1)
        print(
            f"{rate:,.0f} records/s replicated; raw serial publish {raw:,.0f}/s "
            f"(ratio {rate / raw:.2f})"
        )
        print("single node:", end=" ")
        reading(single.url, "r1", args.records)
        for threads in (1, 8):
            stateless = store_rate(single.url, args.records // 4, 1, threads)
            print(
                f"single node: JetStreamStore (no disk), {threads} thread(s): {stateless:,.0f} "
                f"records/s (ratio to raw {stateless / raw:.2f})"
            )
        lag(single.url, base / "lag", args.seconds, args.outage, single)
    finally:
        single.kill()

    cluster = Cluster(base / "cluster").start()
    try:
        rate, raw = throughput(cluster.url, base / "t3", args.records, 3)
        print(
            f"three-node R3: {rate:,.0f} records/s replicated; raw serial publish {raw:,.0f}/s "
            f"(ratio {rate / raw:.2f})"
        )
        for threads in (1, 8):
            stateless = store_rate(cluster.url, args.records // 4, 3, threads)
            print(
                f"three-node R3: JetStreamStore (no disk), {threads} thread(s): {stateless:,.0f} "
                f"records/s (ratio to raw {stateless / raw:.2f})"
            )
        print("three-node R3:", end=" ")
        lag(cluster.url, base / "lag3", args.seconds, 0, None)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
