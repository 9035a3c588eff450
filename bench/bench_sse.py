"""Server-Sent Events fan-out: 200 subscribers while 100 decisions/s are posted.

``rtrace serve`` runs in its own processes; subscribers run in two other processes (100 each,
asyncio + httpx); a poster records when each POST returned 201 (the decision durable). A
decision's delivery latency is its arrival at a subscriber minus that instant (one clock: one
host). Every subscriber must receive every decision exactly once.

    python bench/bench_sse.py [--subscribers 200] [--rate 100] [--seconds 10] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time

import httpx

from serving import served

BODY = {
    "action": "halt",
    "approved": True,
    "votes": {"ops": {"passed": True}},
    "subject": {"agent_id": "bench"},
    "reason": "fan-out",
}


async def _subscribe(
    url: str, count: int, ready: multiprocessing.Event, total: int
) -> list[list[tuple[int, float]]]:
    limits = httpx.Limits(max_connections=count + 10)
    async with httpx.AsyncClient(timeout=None, limits=limits) as client:

        async def one() -> list[tuple[int, float]]:
            got: list[tuple[int, float]] = []
            async with client.stream("GET", f"{url}/v1/stream") as response:
                assert response.status_code == 200, response.status_code
                opened.append(1)
                if len(opened) == count:
                    ready.set()
                async for line in response.aiter_lines():
                    if line.startswith("id: "):
                        got.append((int(line[4:]), time.time()))
                        if len(got) == total:
                            return got
            return got

        opened: list[int] = []
        return list(await asyncio.gather(*(one() for _ in range(count))))


def subscriber_process(
    url: str, count: int, ready: multiprocessing.Event, total: int, out: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    """Run ``count`` subscribers; put their (seq, arrival) lists on ``out``."""
    out.put(asyncio.run(_subscribe(url, count, ready, total)))


def main() -> None:
    """Start the server and subscribers, post at a steady rate, check and time delivery."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    total = int(args.rate * args.seconds)
    options = ("--workers", str(args.workers), "--streams-per-client", str(args.subscribers))
    with served(*options) as (url, _work):
        out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        procs, events = [], []
        for n in (args.subscribers // 2, args.subscribers - args.subscribers // 2):
            ready = multiprocessing.Event()
            proc = multiprocessing.Process(
                target=subscriber_process, args=(url, n, ready, total, out)
            )
            proc.start()
            procs.append(proc)
            events.append(ready)
        for ready in events:
            assert ready.wait(60), "subscribers did not connect"
        time.sleep(0.5)  # let the last streams reach their handlers
        posted: dict[int, float] = {}
        start = time.perf_counter()
        with httpx.Client(timeout=10) as client:
            for i in range(total):
                r = client.post(f"{url}/v1/decisions", json=BODY)
                posted[r.json()["seq"]] = time.time()
                time.sleep(max(0.0, start + (i + 1) / args.rate - time.perf_counter()))
        results = [sub for _ in procs for sub in out.get(timeout=120)]
        for proc in procs:
            proc.join()
        complete = sum(1 for sub in results if sorted(s for s, _ in sub) == sorted(posted))
        lat = [(t - posted[s]) * 1000 for sub in results for s, t in sub if s in posted]
        q = statistics.quantiles(lat, n=100)
        print(
            f"| {len(results)} subscribers, {args.rate:.0f} decisions/s posted for "
            f"{args.seconds:.0f} s ({len(lat):,} events delivered, "
            f"{len(lat) / args.seconds:,.0f}/s) | {complete}/{len(results)} got every "
            f"decision once | p50 {q[49]:.1f} ms | p99 {q[98]:.1f} ms |"
        )


if __name__ == "__main__":
    main()
