"""Integrity: verify throughput, proof latency at 10^3/10^5/10^7 records, checkpoint cost.

- verify: ``verify(root)`` over a log of realistic decisions (default 1 GB), in MB/s, beside
  ``hashlib.sha256`` over the same bytes in the same run (read in 1 MiB blocks).
- proofs: logs of 10^3, 10^5 and 10^7 records. Day files are written directly (the record
  format, ``sync="never"`` speed) and the derived hash file and index are built by the library
  (``SignedTree.sync_to``, ``Index.catch_up``); a checkpoint is signed. Then each measurement is
  the *first* ``prove(seq)`` / ``consistency(old)`` call in a fresh process.
- checkpointing on the append path: 8 threads, ``sync="batch"``, records/s with the default
  schedule (every 1024 records / 60 s) and with no schedule (tree kept, nothing signed).

    python bench/bench_integrity.py [--verify-mb N] [--sizes 1000,100000,10000000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "src")
sys.path.insert(0, SRC)

from reasoning_trace import DecisionLog  # noqa: E402
from reasoning_trace.demo import gate_decision  # noqa: E402
from reasoning_trace.record import format_utc, prepare  # noqa: E402

DAY0_US = 1795564800 * 1_000_000 - 30 * 86_400_000_000  # 30 days before 2026-11-25


def build(
    root: str, count: int, *, realistic: bool, per_day: int = 400_000, day0_us: int = DAY0_US
) -> int:
    """Write ``count`` records into day files from ``day0_us`` on; return the bytes written."""
    os.makedirs(root, exist_ok=True)
    rng = random.Random(3)
    if realistic:
        templates = [prepare(**gate_decision(rng, n)) for n in range(256)]  # type: ignore[arg-type]
    else:
        templates = [prepare("halt", bool(n % 2), {}, {"n": n}) for n in range(256)]
    pieces = []
    for t in templates:  # split out the id, so each record gets its own
        quoted = b'"' + t.id.encode() + b'"'
        before, after = t.mid.split(quoted)
        pieces.append((t.head, before, after, t.tail_a, t.tail_b))
    step = 86_400_000_000 // per_day
    written = 0
    seq = 0
    while seq < count:
        day_start = day0_us + (seq // per_day) * 86_400_000_000
        path = os.path.join(root, format_utc(day_start)[:10] + ".jsonl")
        with open(path, "ab") as fh:
            end = min(count, (seq // per_day + 1) * per_day)
            while seq < end:
                chunk = []
                for s in range(seq, min(end, seq + 20_000)):
                    micros = day_start + (s % per_day) * step
                    head, before, after, tail_a, tail_b = pieces[s % 256]
                    chunk.append(
                        b"".join(
                            (
                                head,
                                format_utc(micros).encode(),
                                before,
                                b'"r-%d"' % s,
                                after,
                                b"%d" % s,
                                tail_a,
                                repr(micros / 1_000_000).encode(),
                                tail_b,
                            )
                        )
                    )
                data = b"\n".join(chunk) + b"\n"
                fh.write(data)
                written += len(data)
                seq += len(chunk)
    return written


def derive(root: str) -> None:
    """Build the index and hash file with the library, and sign a checkpoint."""
    with DecisionLog(root, sync="never") as log:
        log._store.index().catch_up()  # type: ignore[attr-defined]
        log.checkpoint()


def fresh(code: str) -> dict[str, float]:
    """Run ``code`` in a new interpreter; it prints one JSON object."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONPATH=SRC),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


PROVE = """
import json, time
from reasoning_trace import DecisionLog
t0 = time.perf_counter()
log = DecisionLog({root!r})
t1 = time.perf_counter()
p = log.prove({seq})
t2 = time.perf_counter()
c = log.consistency({old}, {size})
t3 = time.perf_counter()
assert p.tree_size == {size} and len(p.proof) > 0
print(json.dumps({{"open": t1 - t0, "inclusion": t2 - t1, "consistency": t3 - t2}}))
"""


def bench_proofs(sizes: list[int], workdir: str) -> None:
    """Proof latency, first call in a fresh process, per log size."""
    print("| records | build (s) | open (ms) | inclusion proof (ms) | consistency proof (ms) |")
    print("|---|---|---|---|---|")
    for n in sizes:
        root = os.path.join(workdir, f"proofs-{n}")
        t = time.perf_counter()
        build(root, n, realistic=False)
        derive(root)
        built = time.perf_counter() - t
        rng = random.Random(n)
        seq, old = rng.randrange(n), rng.randrange(1, n)
        r = fresh(PROVE.format(root=root, seq=seq, old=old, size=n))
        print(
            f"| {n:,} | {built:.0f} | {r['open'] * 1000:.1f} | {r['inclusion'] * 1000:.1f} "
            f"| {r['consistency'] * 1000:.1f} |"
        )
        shutil.rmtree(root)


VERIFY = """
import json, time
from reasoning_trace.verify import verify
t = time.perf_counter()
report = verify({root!r})
t = time.perf_counter() - t
assert report.ok and report.signed_size == report.records, report.findings[:3]
print(json.dumps({{"seconds": t, "bytes": report.bytes}}))
"""


def bench_verify(mb: int, workdir: str) -> None:
    """verify MB/s beside raw SHA-256 over the same day files."""
    root = os.path.join(workdir, "verify")
    count = mb * 1_000_000 // 560
    build(root, count, realistic=True)
    derive(root)  # one checkpoint covering every record: verify's fast path throughout
    raw = time.perf_counter()
    total = 0
    for name in sorted(os.listdir(root)):
        if name.endswith(".jsonl"):
            with open(os.path.join(root, name), "rb") as fh:
                h = hashlib.sha256()
                while block := fh.read(1 << 20):
                    h.update(block)
                    total += len(block)
    raw = time.perf_counter() - raw
    ours = fresh(VERIFY.format(root=root))
    ours_mbs = ours["bytes"] / ours["seconds"] / 1e6
    raw_mbs = total / raw / 1e6
    print(
        f"| verify, {total / 1e6:,.0f} MB, {count:,} records | {ours_mbs:,.0f} MB/s | "
        f"raw SHA-256 {raw_mbs:,.0f} MB/s | {ours_mbs / raw_mbs:.0%} |"
    )
    shutil.rmtree(root)


def bench_append(seconds: float, workdir: str) -> None:
    """Appends/s with and without the default checkpoint schedule (8 threads, batch)."""
    sys.path.insert(0, HERE)
    from bench_append import SUBJECT, VOTES, rate

    rows = []
    for label, kwargs in (
        ("default schedule (every 1024 / 60 s)", {}),
        ("no schedule (tree kept)", {"checkpoint_every": 0, "checkpoint_seconds": 0}),
        ("no integrity at all", {"integrity": False}),
    ):
        root = tempfile.mkdtemp(dir=workdir)
        with DecisionLog(root, sync="batch", **kwargs) as log:  # type: ignore[arg-type]
            got, _ = rate(lambda i: log.record("a", True, VOTES, SUBJECT, "r"), 8, seconds)
        rows.append((label, got))
    base = rows[1][1]
    for label, got in rows:
        print(f"| appends, 8 threads, batch: {label} | {got:,.0f}/s | {got / base:.2f}x |")


def main() -> None:
    """Run the three measurements and print Markdown rows."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--verify-mb", type=int, default=1000)
    parser.add_argument("--sizes", default="1000,100000,10000000")
    parser.add_argument("--append-seconds", type=float, default=4.0)
    parser.add_argument("--only", choices=("verify", "proofs", "append"), default=None)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="rtrace-integrity-", dir=os.environ.get("BENCH_DIR"))
    os.environ["REASONING_TRACE_KEY"] = os.path.join(workdir, "signing.key")
    try:
        if args.only in (None, "append"):
            bench_append(args.append_seconds, workdir)
        if args.only in (None, "verify"):
            bench_verify(args.verify_mb, workdir)
        if args.only in (None, "proofs"):
            bench_proofs([int(s) for s in args.sizes.split(",")], workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
