"""Processes share a group commit (SPEC 3): SIGKILL of one writer among many, mid-anything."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
from pathlib import Path

from reasoning_trace import DecisionLog
from reasoning_trace.verify import verify

from .test_processes import check_log, start_writer


def pump(proc: subprocess.Popen[str], into: list[str]) -> threading.Thread:
    """Collect a writer's acknowledgement lines in a thread of their own."""

    def run() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            into.append(line)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def durable_claim_is_true(root: Path) -> None:
    """The durable offset published in ``.rtrace/lock`` (after the head and the written
    slot) names a day file that has at least that many bytes, ending there on a whole line."""
    raw = (root / ".rtrace" / "lock").read_bytes()[160:224].split()
    if not raw:
        return
    day, ino, offset = raw[0].decode(), int(raw[1]), int(raw[2])
    path = root / f"{day}.jsonl"
    data = path.read_bytes()
    assert os.stat(path).st_ino == ino
    assert 0 < offset <= len(data)
    assert data[offset - 1 : offset] == b"\n"


def test_sigkill_one_writer_among_many(root: Path) -> None:
    """4 processes x 2 threads record; one is killed at a chosen acknowledgement each round;
    the others finish, and every acknowledged record of all of them is in the log once."""
    rng = random.Random("shared-sync")
    DecisionLog(str(root)).close()
    acked: dict[str, int] = {}
    for round_no in range(6):
        victim = start_writer(root, f"r{round_no}v", 100_000, 2, "batch", rng.choice([0, 3000]))
        others = [start_writer(root, f"r{round_no}w{n}", 150, 2, "batch") for n in range(3)]
        lines: list[list[str]] = [[] for _ in range(4)]
        pumps = [pump(p, lines[k]) for k, p in enumerate([victim, *others])]
        wanted = rng.randrange(1, 200)
        while len(lines[0]) < wanted and victim.poll() is None:
            threading.Event().wait(0.001)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        for proc in others:  # a writer killed mid-fsync never leaves the others waiting
            proc.wait(timeout=600)
            assert proc.returncode == 0
        for th in pumps:
            th.join()
        for proc in (victim, *others):
            assert proc.stdout is not None and proc.stderr is not None
            errors = proc.stderr.read()
            proc.stdout.close()
            proc.stderr.close()
            assert "Traceback" not in errors, errors
        assert all(len(lines[k]) == 300 for k in (1, 2, 3))
        for k in range(4):
            for line in lines[k]:
                seq, rid = line.split()[:2]
                acked[rid] = int(seq)
        durable_claim_is_true(root)
        with DecisionLog(str(root)) as log:  # the next writer repairs what the kill left
            log.record("after-kill", True, {}, {"round": round_no})
        records = check_log(root)
        on_disk = {r["id"]: r["seq"] for r in records}
        missing = [i for i in acked if i not in on_disk]
        assert not missing, f"round {round_no}: acknowledged but lost: {missing[:5]}"
        assert all(on_disk[i] == s for i, s in acked.items())
        durable_claim_is_true(root)
    report = verify(root)
    assert report.ok, report.failures[:5]
    assert report.kinds() <= {"crash_fragment", "unsigned", "clock_backwards"}


def test_processes_and_threads_mixed_sync_modes(root: Path) -> None:
    """Writers under batch, always and never on one root at once: whole, contiguous, all kept."""
    DecisionLog(str(root)).close()
    procs = [start_writer(root, f"m{s}", 200, 2, s) for s in ("batch", "batch", "always", "never")]
    acked: dict[str, int] = {}
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        for line in out.splitlines():
            seq, rid = line.split()[:2]
            acked[rid] = int(seq)
    records = check_log(root)
    assert len(records) == len(acked) == 1600
    assert {r["id"]: r["seq"] for r in records} == acked
    durable_claim_is_true(root)
