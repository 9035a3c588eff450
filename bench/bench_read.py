"""Reading: read_recent on a big day file, a full scan, and follow latency across processes.

Builds one day file of ``--size-mb`` MB (default 1024) of realistic gate decisions, then:

- ``read_recent(200)`` as the first call in a fresh process, beside the seed's ``read_recent``
  (read the whole file, ``json.loads`` every line) in another fresh process;
- a full ``DecisionLog.iter()`` scan in a fresh process: MB/s and RSS growth, beside a plain
  ``json.loads`` loop over the same file;
- ``follow``: a writer process records 1,000 decisions (``sync="batch"``) at 200/s and prints
  when each ``record`` returned; a follower process prints when it saw each; p50/p99 of the gap.

    python bench/bench_read.py [--size-mb N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from reasoning_trace.demo import gate_decision  # noqa: E402
from reasoning_trace.record import format_utc, prepare  # noqa: E402

DAY_START_US = 1795564800 * 1_000_000  # 2026-11-25T00:00:00Z


def build(root: str, size_mb: int) -> tuple[str, int, int]:
    """Write one day file of about ``size_mb`` MB; return (path, bytes, records)."""
    os.makedirs(root, exist_ok=True)
    rng = random.Random(7)
    templates = [prepare(**gate_decision(rng, n)) for n in range(256)]  # type: ignore[arg-type]
    path = os.path.join(root, "2026-11-25.jsonl")
    target = size_mb * 1_000_000
    written = seq = 0
    step = 20_000  # microseconds between records: ~4.3 million fit in the day
    with open(path, "wb") as fh:
        while written < target:
            chunk = []
            for _ in range(10_000):
                micros = DAY_START_US + seq * step // 1000
                chunk.append(templates[seq % 256].compose(seq, micros, format_utc(micros)))
                seq += 1
            data = b"\n".join(chunk) + b"\n"
            fh.write(data)
            written += len(data)
    return path, written, seq


def in_fresh_process(code: str) -> dict[str, float]:
    """Run ``code`` in a new interpreter; it prints one JSON object of measurements."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONPATH=os.path.join(HERE, "..", "src")),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


RECENT = """
import json, time
t0 = time.perf_counter()
import reasoning_trace
reasoning_trace._resolve_trace_dir = lambda: {root!r}
t1 = time.perf_counter()
rows = reasoning_trace.read_recent(200)
t2 = time.perf_counter()
assert len(rows) == 200 and rows[-1]["seq"] == {last}
print(json.dumps({{"seconds": t2 - t1, "with_import": t2 - t0}}))
"""

SEED_RECENT = """
import json, time
t1 = time.perf_counter()
rows = []
with open({path!r}, "r", encoding="utf-8") as fh:
    for line in fh:
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
rows = rows[-200:]
t2 = time.perf_counter()
assert rows[-1]["seq"] == {last}
print(json.dumps({{"seconds": t2 - t1}}))
"""

SCAN = """
import json, resource, time
from reasoning_trace import DecisionLog
log = DecisionLog({root!r})
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t1 = time.perf_counter()
n = 0
for d in log.iter():
    n += 1
t2 = time.perf_counter()
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert n == {count}
print(json.dumps({{"seconds": t2 - t1, "rss_growth_mb": (rss1 - rss0) / 1024}}))
"""

OPEN_AND_RECORD = """
import json, time
from reasoning_trace import DecisionLog
t1 = time.perf_counter()
with DecisionLog({root!r}, sync="batch") as log:
    d = log.record("upgrade_proposal", True, {{}}, {{"probe": True}})
t2 = time.perf_counter()
print(json.dumps({{"seconds": t2 - t1, "seq": d.seq}}))
"""

JSON_SCAN = """
import json, time
t1 = time.perf_counter()
n = 0
with open({path!r}, "rb") as fh:
    for line in fh:
        json.loads(line)
        n += 1
t2 = time.perf_counter()
assert n == {count}
print(json.dumps({{"seconds": t2 - t1}}))
"""

WRITER = """
import sys, time
from reasoning_trace import DecisionLog
with DecisionLog({root!r}, sync="batch") as log:
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    for i in range(1000):
        d = log.record("upgrade_proposal", True, {{"safety": {{"passed": True}}}}, {{"i": i}})
        print(d.seq, time.time(), flush=True)
        time.sleep(max(0.0, start + (i + 1) / 200 - time.perf_counter()))
"""

FOLLOWER = """
import sys, time
from reasoning_trace import DecisionLog
with DecisionLog({root!r}) as log:
    records = log.follow()  # fixes the starting point now
    print("ready", flush=True)
    seen = 0
    for d in records:
        print(d.seq, time.time(), flush=True)
        seen += 1
        if seen == 1000:
            break
"""


def follow_latency(workdir: str) -> tuple[float, float]:
    """p50 and p99 (ms) from a record returning in one process to another process seeing it."""
    root = os.path.join(workdir, "follow")
    env = dict(os.environ, PYTHONPATH=os.path.join(HERE, "..", "src"))
    from reasoning_trace import DecisionLog

    DecisionLog(root).close()
    follower = subprocess.Popen(
        [sys.executable, "-c", FOLLOWER.format(root=root)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(root=root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert follower.stdout and writer.stdout and writer.stdin
    assert follower.stdout.readline().strip() == "ready"
    assert writer.stdout.readline().strip() == "ready"
    writer.stdin.write("go\n")
    writer.stdin.flush()
    returned = dict(line.split() for line in writer.stdout)
    seen = dict(line.split() for line in follower.stdout)
    writer.wait()
    follower.wait()
    gaps = [(float(seen[s]) - float(t)) * 1000 for s, t in returned.items()]
    q = statistics.quantiles(gaps, n=100)
    return q[49], q[98]


def main() -> None:
    """Build the file, run each measurement beside its baseline, print a Markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--keep", default=None, help="reuse or keep the log in this directory")
    args = parser.parse_args()
    workdir = args.keep or tempfile.mkdtemp(prefix="rtrace-read-")
    root = os.path.join(workdir, "log")
    path = os.path.join(root, "2026-11-25.jsonl")
    if os.path.exists(path) and args.keep:
        with open(path, "rb") as fh:
            fh.seek(-2000, 2)
            last = json.loads(fh.read().splitlines()[-1])["seq"]
        size, count = os.path.getsize(path), last + 1
    else:
        t = time.perf_counter()
        path, size, count = build(root, args.size_mb)
        print(f"built {size / 1e6:,.0f} MB, {count:,} records in {time.perf_counter() - t:.1f} s")
    mb = size / 1e6
    ours = in_fresh_process(RECENT.format(root=root, last=count - 1))
    seed = in_fresh_process(SEED_RECENT.format(path=path, last=count - 1))
    scan = in_fresh_process(SCAN.format(root=root, count=count))
    plain = in_fresh_process(JSON_SCAN.format(path=path, count=count))
    p50, p99 = follow_latency(workdir)
    empty = os.path.join(workdir, "empty")
    open_empty = in_fresh_process(OPEN_AND_RECORD.format(root=empty))
    big_copy = os.path.join(workdir, "big-copy")  # the probe record must not change the big log
    shutil.copytree(root, big_copy)
    os.sync()  # else the first fsync also writes back the gigabyte just copied
    open_big = in_fresh_process(OPEN_AND_RECORD.format(root=big_copy))
    assert open_big["seq"] == count
    shutil.rmtree(big_copy)
    shutil.rmtree(empty)
    print(f"| measurement ({mb:,.0f} MB day file, {count:,} records) | ours | baseline | ratio |")
    print("|---|---|---|---|")
    print(
        f"| read_recent(200), first call in a fresh process | {ours['seconds'] * 1000:.2f} ms "
        f"({ours['with_import'] * 1000:.0f} ms with import) | {seed['seconds'] * 1000:,.0f} ms "
        f"(seed: whole file) | {seed['seconds'] / ours['seconds']:,.0f}x faster |"
    )
    print(
        f"| full iter() scan | {mb / scan['seconds']:,.0f} MB/s, RSS +{scan['rss_growth_mb']:.1f}"
        f" MB | {mb / plain['seconds']:,.0f} MB/s (json.loads per line) | "
        f"{plain['seconds'] / scan['seconds']:.2f}x |"
    )
    print(
        f"| follow, record returned -> seen in another process | p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms | | |"
    )
    print(
        f"| open + first durable record, fresh process | {open_big['seconds'] * 1000:.1f} ms "
        f"on this log | {open_empty['seconds'] * 1000:.1f} ms on an empty log | "
        f"{open_big['seconds'] / open_empty['seconds']:.2f}x |"
    )
    if not args.keep:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
