"""Real processes: concurrent writers, SIGKILL at random instants, a writer on a fake clock
(libfaketime) crossing midnight."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from reasoning_trace import DecisionLog

from .conftest import HERE, all_lines
from .fake_clock import HERE as CLOCK_HERE
from .fake_clock import FakeClock, needs_fake_clock

WRITER = str(HERE / "writer_proc.py")


def start_writer(
    root: Path,
    tag: str,
    count: int,
    threads: int,
    sync: str,
    pad: int = 0,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    """Start writer_proc.py in its own process (with ``env`` as its environment if given)."""
    return subprocess.Popen(
        [sys.executable, WRITER, str(root), tag, str(count), str(threads), sync, str(pad)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def check_log(root: Path) -> list[dict]:
    """Every line parses, seqs are 0..n-1 in file order, ids are unique; returns the records."""
    records = [orjson.loads(line) for line in all_lines(root)]
    assert [r["seq"] for r in records] == list(range(len(records)))
    assert len({r["id"] for r in records}) == len(records)
    return records


def test_many_processes_write_at_once(root: Path) -> None:
    """4 processes x 2 threads x 1000 records: all whole, seq contiguous, each writer in order."""
    DecisionLog(str(root)).close()
    procs = [start_writer(root, f"p{n}", 1000, 2, "batch") for n in range(4)]
    acked = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        acked.extend(out.split())
    records = check_log(root)
    assert len(records) == 8000
    for n in range(4):
        for t in range(2):
            mine = [
                r["subject"]["i"]
                for r in records
                if r["subject"]["tag"] == f"p{n}" and r["subject"]["t"] == t
            ]
            assert mine == list(range(1000))
    ids_on_disk = {r["id"]: r["seq"] for r in records}
    acked_pairs = [(int(s), i) for s, i in zip(acked[0::5], acked[1::5], strict=True)]
    assert all(ids_on_disk[i] == s for s, i in acked_pairs)


@pytest.mark.parametrize("sync", ["batch", "always"])
def test_sigkill_at_random_instants(root: Path, sync: str) -> None:
    """Kill -9 of every writer at random points, many rounds: acknowledged records survive once."""
    rng = random.Random(f"sigkill-{sync}")
    acked: dict[str, int] = {}
    for round_no in range(12):
        procs = [
            start_writer(
                root, f"r{round_no}w{n}", 100_000, 2, sync, pad=rng.choice([0, 2000, 60000])
            )
            for n in range(3)
        ]
        lines: list[list[str]] = [[] for _ in procs]

        def pump(
            k: int, procs: list[subprocess.Popen[str]] = procs, lines: list[list[str]] = lines
        ) -> None:
            assert procs[k].stdout is not None
            for line in procs[k].stdout:
                lines[k].append(line)

        pumps = [threading.Thread(target=pump, args=(k,)) for k in range(len(procs))]
        for th in pumps:
            th.start()
        wanted = rng.randrange(1, 150)
        # Wait for the chosen number of acknowledgements from the first writer, then kill all.
        while len(lines[0]) < wanted and procs[0].poll() is None:
            threading.Event().wait(0.001)
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
        for proc in procs:
            proc.wait()
        for th in pumps:
            th.join()
        for proc in procs:
            assert proc.stdout is not None and proc.stderr is not None
            errors = proc.stderr.read()
            proc.stdout.close()
            proc.stderr.close()
            assert "Traceback" not in errors, errors
        for k in range(len(procs)):
            for line in lines[k]:
                seq, rid = line.split()[:2]
                acked[rid] = int(seq)
        # The next writer repairs whatever the crash left, then the log must be whole.
        with DecisionLog(str(root), sync="always") as log:
            log.record("after-crash", True, {}, {"round": round_no})
        records = check_log(root)
        on_disk = {r["id"]: r["seq"] for r in records}
        missing = {i for i in acked if i not in on_disk}
        assert not missing, f"round {round_no}: acknowledged but lost: {sorted(missing)[:5]}"
        assert all(on_disk[i] == s for i, s in acked.items())
    quarantine = root / "quarantine"
    fragments = list(quarantine.iterdir()) if quarantine.exists() else []
    for fragment in fragments:
        assert b"\n" not in fragment.read_bytes()  # only a torn last line is ever cut
    from reasoning_trace.verify import verify

    report = verify(root)  # the crashes left notes at most, never a failure
    assert report.ok, report.failures[:5]
    assert report.kinds() <= {"crash_fragment", "unsigned", "clock_backwards"}


@needs_fake_clock
def test_writer_under_faketime_crosses_midnight(root: Path, tmp_path: Path) -> None:
    """A writer whose clock crosses UTC midnight (five records at 23:59:59, then it moves its
    own clock to 00:00:00.5 and records five more) splits records by their own day; readers
    follow."""
    clock = FakeClock(tmp_path / "clock", "2026-11-25 23:59:59")
    script = f"""
import sys
sys.path.append({CLOCK_HERE!r})
from fake_clock import move_clock
from reasoning_trace import DecisionLog, read_recent
import reasoning_trace
reasoning_trace._resolve_trace_dir = lambda: {str(root)!r}
with DecisionLog({str(root)!r}, sync="batch") as log:
    for _ in range(5):
        assert log.record("tick", True, {{}}, {{}}).day == "2026-11-25"
    move_clock("2026-11-26 00:00:00.5")
    for _ in range(5):
        log.record("tick", True, {{}}, {{}})
recent = read_recent(10_000)
print(len(recent), recent[0]["seq"], recent[-1]["seq"], recent[-1]["datetime_utc"])
"""
    seen: list[int] = []
    follower_done = threading.Event()

    def follow() -> None:
        DecisionLog(str(root)).close()
        with DecisionLog(str(root)) as log:
            for d in log.follow(after_seq=-1, stop=follower_done.is_set):
                seen.append(d.seq)

    follower = threading.Thread(target=follow)
    follower.start()
    try:
        n = write_across_midnight(root, script, clock)
        # The follower in this process sees every record, in order, across the boundary.
        deadline = time.monotonic() + 60
        while len(seen) < n and time.monotonic() < deadline:
            follower.join(timeout=0.01)
    finally:
        follower_done.set()
        follower.join(timeout=10)
    assert seen == list(range(n))
    assert os.environ.get("FAKETIME_TIMESTAMP_FILE") is None


def write_across_midnight(root: Path, script: str, clock: FakeClock) -> int:
    """Run the midnight writer ``script`` on ``clock``; check its log; its record count."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=clock.env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    records = check_log(root)
    n = len(records)
    count, first, last, last_dt = result.stdout.split()
    assert (int(count), int(first), int(last)) == (n, 0, n - 1) == (10, 0, 9)
    assert last_dt.startswith("2026-11-26T00:00:")
    days = [r["datetime_utc"][:10] for r in records]
    assert days == sorted(days) and set(days) == {"2026-11-25", "2026-11-26"}
    assert sorted(p.name for p in root.glob("*.jsonl")) == ["2026-11-25.jsonl", "2026-11-26.jsonl"]
    return n
