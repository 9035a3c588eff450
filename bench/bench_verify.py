"""verify MB/s against raw SHA-256 of the same bytes (issue 19), before and after, same run.

A log of realistic decisions (``--records``, ``--per-day`` records a day file) is written
directly in the record format and one checkpoint covering every record is signed (verify's
fast path throughout). Then, each round, in this order or reversed on odd rounds:

- raw SHA-256: ``hashlib.sha256`` over every day file, read in 1 MiB blocks, in this process
  (the issue's baseline), and the same split over 2 already-started processes (the machine has
  2 cores and verify hashes in worker processes, so this is the fairest parallel figure);
- ``verify(root)`` in a fresh interpreter with this checkout's ``src`` ("after") and with
  ``--before SRC`` (another checkout's ``src``, "before", when given), timed inside that
  process; its CPU
  seconds (the process and its workers) are measured too, being steadier on a shared machine.

Prints min/median/max over ``--rounds`` of each rate and of each verify's ratio to the raw
rates measured in the same round; and the CPU seconds of raw hashing over those of verify (all
its processes): on 2 cores the wall-clock ratio of a quiet machine is at most twice that.

    python bench/bench_verify.py [--records 1000000] [--per-day 20000] [--rounds 3]
                                 [--before OTHER_CHECKOUT/src]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

from bench_integrity import build, derive  # noqa: E402

VERIFY = """
import json, time
from reasoning_trace.verify import verify
t = time.perf_counter()
report = verify({root!r})
t = time.perf_counter() - t
assert report.ok and report.signed_size == report.records, report.findings[:3]
print(json.dumps({{"seconds": t, "bytes": report.bytes}}))
"""


def sha_files(paths: list[str]) -> int:
    """SHA-256 of each file, read in 1 MiB blocks; returns the bytes hashed."""
    total = 0
    for path in paths:
        with open(path, "rb") as fh:
            h = hashlib.sha256()
            while block := fh.read(1 << 20):
                h.update(block)
                total += len(block)
        h.digest()
    return total


def run_verify(src: str, root: str) -> tuple[float, float]:
    """verify(root) in a fresh interpreter on ``src``: (MB/s, CPU seconds of it and workers)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [sys.executable, "-c", VERIFY.format(root=root)],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONPATH=src),
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return got["bytes"] / got["seconds"] / 1e6, cpu


def spread(values: list[float], fmt: str) -> str:
    """min / median / max of ``values``."""
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def main() -> None:
    """Build the log, run the rounds, print a Markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--per-day", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", help="another checkout's src, measured alongside")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="rtrace-verify-", dir=os.environ.get("BENCH_DIR"))
    os.environ["REASONING_TRACE_KEY"] = os.path.join(workdir, "signing.key")
    root = os.path.join(workdir, "log")
    try:
        nbytes = build(root, args.records, realistic=True, per_day=args.per_day)
        derive(root)
        paths = sorted(os.path.join(root, n) for n in os.listdir(root) if n.endswith(".jsonl"))
        halves = [paths[0::2], paths[1::2]]
        sides = {"after": SRC}
        if args.before is not None:
            if not os.path.isdir(os.path.join(args.before, "reasoning_trace")):
                parser.error(f"--before {args.before}: no reasoning_trace package there")
            sides["before"] = args.before
        rates: dict[str, list[float]] = {k: [] for k in ("raw", "raw2", *sides)}
        cpu: dict[str, list[float]] = {k: [] for k in sides}
        raw_cpu: list[float] = []
        ratios: dict[str, list[float]] = {f"{k}/{b}": [] for k in sides for b in ("raw", "raw2")}
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(sha_files, [[], []]))  # started before the clock
            for n in range(args.rounds):
                t, c = time.perf_counter(), time.process_time()
                total = sha_files(paths)
                rates["raw"].append(total / (time.perf_counter() - t) / 1e6)
                raw_cpu.append(time.process_time() - c)
                t = time.perf_counter()
                total2 = sum(pool.map(sha_files, halves))
                rates["raw2"].append(total2 / (time.perf_counter() - t) / 1e6)
                for side in sides if n % 2 == 0 else reversed(sides):
                    mbs, seconds = run_verify(sides[side], root)
                    rates[side].append(mbs)
                    cpu[side].append(seconds)
                    for base in ("raw", "raw2"):
                        ratios[f"{side}/{base}"].append(mbs / rates[base][-1])
        print(
            f"{nbytes / 1e6:,.0f} MB, {args.records:,} records, "
            f"{len(paths)} day files, {args.rounds} rounds (min / median / max)\n"
        )
        print("| measurement | MB/s | CPU s (verify + workers) |")
        print("|---|---|---|")
        print(
            f"| raw SHA-256, 1 process (the baseline) | {spread(rates['raw'], ',.0f')} "
            f"| {spread(raw_cpu, '.2f')} |"
        )
        print(f"| raw SHA-256, 2 processes | {spread(rates['raw2'], ',.0f')} | |")
        for side in sides:
            print(
                f"| `verify`, {side} | {spread(rates[side], ',.0f')} | {spread(cpu[side], '.2f')} |"
            )
        print("\n| ratio (same round) | min / median / max |")
        print("|---|---|")
        for key, values in ratios.items():
            side, base = key.split("/")
            label = "raw SHA-256, 1 process" if base == "raw" else "raw SHA-256, 2 processes"
            print(f"| `verify` {side} / {label} | {spread(values, '.0%')} |")
        for side in sides:
            cpu_ratio = [r / v for r, v in zip(raw_cpu, cpu[side], strict=True)]
            print(
                f"| CPU seconds: raw SHA-256 / `verify` {side} (all its processes) "
                f"| {spread(cpu_ratio, '.0%')} |"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
