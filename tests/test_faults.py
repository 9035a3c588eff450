"""The writer under faults: clock steps, lost newlines, crashes during repair, a full disk,
an unusable signing key. Real processes, a real libfaketime clock, a real tmpfs; no date of
today."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from reasoning_trace import (
    DecisionLog,
    SigningKeyError,
    StorageError,
    UnreconciledLog,
    counters,
    files,
)
from reasoning_trace.checkpoint import Checkpoints
from reasoning_trace.record import MAX_MICROS, parse_utc, prepare
from reasoning_trace.signed_tree import SignedTree
from reasoning_trace.tree import stored_hash_index
from reasoning_trace.verify import verify

from .conftest import all_lines
from .fake_clock import FakeClock, needs_fake_clock
from .test_cli_integrity import RTRACE, rtrace
from .test_processes import start_writer


def rtrace_at(root: Path, when: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run rtrace in its own process, its clock stopped at ``when`` (UTC) however long it takes
    to start."""
    cmd = [RTRACE] if RTRACE else [sys.executable, "-m", "reasoning_trace"]
    clock = FakeClock(root.parent / f"clock-{uuid.uuid4().hex}", when)
    try:
        return subprocess.run(
            [*cmd, "--dir", str(root), *args],
            capture_output=True,
            text=True,
            env=clock.env(),
            timeout=120,
        )
    finally:
        clock.path.unlink()


class Lines:
    """A process's stdout lines, read by a thread, so a test waits with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        self.thread = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self.thread.start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        """Move each line the process prints into the queue until it closes its stdout."""
        assert proc.stdout is not None
        for line in proc.stdout:
            self.queue.put(line)

    def take(self, count: int, timeout: float = 60.0) -> list[str]:
        """The next ``count`` lines; fails (never hangs) when they do not come in time."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            try:
                out.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"only {len(out)} of {count} lines arrived: {out}") from None
        return out


def check_order(root: Path) -> list[dict]:  # type: ignore[type-arg]
    """Every record in file order: seqs 0..n-1 in order, instants never going back."""
    records = [orjson.loads(line) for line in all_lines(root)]
    assert [r["seq"] for r in records] == list(range(len(records)))
    instants = [parse_utc(r["datetime_utc"]) for r in records]
    assert instants == sorted(instants)
    for path in root.glob("*.jsonl"):
        assert {
            r["datetime_utc"][:10] for r in map(orjson.loads, path.read_bytes().splitlines())
        } <= {path.stem}
    return records


# --- 1. time in the log never runs backwards -------------------------------------------------


@needs_fake_clock
def test_clock_stepping_back_across_midnight_in_separate_processes(root: Path) -> None:
    """The issue's reproduction: four writer processes whose clocks step back and forth across
    midnight; a live tail -f sees each record once; verify, query and prove agree; a rebuild
    after deleting .rtrace issues no seq twice."""
    steps = [
        "2026-03-01 23:59:58",
        "2026-03-02 00:00:03",
        "2026-03-01 23:59:50",
        "2026-03-02 00:00:01",
    ]
    first = rtrace_at(root, steps[0], "record", "--action", "step0", "--approved")
    assert first.returncode == 0, first.stderr
    follower = subprocess.Popen(
        [RTRACE or "rtrace", "--dir", str(root), "tail", "-n", "1", "-f"],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = Lines(follower)
    try:
        assert json.loads(lines.take(1)[0])["seq"] == 0
        for i, when in enumerate(steps[1:], start=1):
            done = rtrace_at(root, when, "record", "--action", f"step{i}", "--approved")
            assert done.returncode == 0, done.stderr
        seen = [json.loads(x) for x in lines.take(3)]
    finally:
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=10) == 0
        lines.thread.join(timeout=10)
        assert follower.stdout is not None
        follower.stdout.close()
    assert [r["seq"] for r in seen] == [1, 2, 3]
    assert [r["action"] for r in seen] == ["step1", "step2", "step3"]

    records = check_order(root)
    assert [r["datetime_utc"][:10] for r in records] == ["2026-03-01"] + ["2026-03-02"] * 3
    # The step back is logged once per process, with its size, and never called tampering.
    assert rtrace(root, "verify").returncode == 0
    query = [json.loads(x) for x in rtrace(root, "query", "--format", "json").stdout.splitlines()]
    assert [r["seq"] for r in query] == [0, 1, 2, 3]
    proof = rtrace(root, "prove", "2")
    assert proof.returncode == 0, proof.stderr
    assert json.loads(proof.stdout)["seq"] == 2

    shutil.rmtree(root / ".rtrace")
    again = rtrace_at(root, "2026-03-01 23:59:59", "record", "--action", "after", "--approved")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["seq"] == 4
    assert [r["seq"] for r in check_order(root)] == [0, 1, 2, 3, 4]
    assert rtrace(root, "verify").returncode == 0
    query = rtrace(root, "query", "--format", "json").stdout.splitlines()
    assert [json.loads(x)["seq"] for x in query] == [0, 1, 2, 3, 4]


@needs_fake_clock
def test_two_writer_processes_with_clocks_apart_across_midnight(root: Path, tmp_path: Path) -> None:
    """Two writer processes of two threads, one's clock three seconds behind the other's, both
    crossing midnight halfway (ahead 23:59:59 then 00:00:03, behind 23:59:56 then 00:00:00),
    with a live tail -f: file order is seq order, records span both days, verify is clean,
    query and prove agree, and a rebuild of the derived files gives the same answers."""
    follower = None
    start = rtrace_at(root, "2026-05-01 23:59:57", "record", "--action", "start", "--approved")
    assert start.returncode == 0, start.stderr
    follower = subprocess.Popen(
        [RTRACE or "rtrace", "--dir", str(root), "tail", "-n", "1", "-f"],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = Lines(follower)
    try:
        lines.take(1)
        writers = []
        for tag, start, step in (
            ("ahead", "2026-05-01 23:59:59", "2026-05-02 00:00:03"),
            ("behind", "2026-05-01 23:59:56", "2026-05-02 00:00:00"),
        ):
            env = FakeClock(tmp_path / f"clock-{tag}", start).env(threads=True)
            env["WRITER_CLOCK_STEP"] = step
            writers.append(start_writer(root, tag, 150, 2, "batch", env=env))
        ahead, behind = writers
        for proc in (ahead, behind):
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        total = len(all_lines(root))
        assert total == 601
        seen = [json.loads(x)["seq"] for x in lines.take(total - 1)]
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=10)
        lines.thread.join(timeout=10)
        assert follower.stdout is not None
        follower.stdout.close()
    assert seen == list(range(1, total))
    records = check_order(root)
    assert {r["datetime_utc"][:10] for r in records} == {"2026-05-01", "2026-05-02"}
    assert rtrace(root, "verify").returncode == 0
    expected = rtrace(root, "query", "--action", "w", "--format", "json").stdout
    assert len(expected.splitlines()) == 600
    assert rtrace(root, "prove", "599").returncode == 0
    shutil.rmtree(root / ".rtrace")
    assert rtrace(root, "query", "--action", "w", "--format", "json").stdout == expected
    assert rtrace(root, "verify").returncode == 0


@pytest.mark.parametrize(
    "reading",
    [0, -1, -86_400_000_000_000, MAX_MICROS * 1000 + 10**15, (1 << 62), 1],
    ids=["epoch", "before-epoch", "a-day-before-epoch", "past-9999", "huge", "one-ns"],
)
def test_any_clock_reading_keeps_the_log_in_order(root: Path, reading: int) -> None:
    """Whatever instant the clock returns (before 1970, past the year 9999, a step back from a
    normal date), records stay in seq order in day files named by their own instants."""
    now = [1_800_000_000 * 10**9]
    with DecisionLog(str(root), sync="never", clock=lambda: now[0]) as log:
        log.record("before", True, {}, {})
        now[0] = reading
        log.record("odd", True, {}, {})
        now[0] = 1_800_000_000 * 10**9 + 5 * 10**9
        log.record("after", True, {}, {})
    records = check_order(root)
    assert [r["action"] for r in records] == ["before", "odd", "after"]
    assert all("0001" <= r["datetime_utc"][:4] <= "9999" for r in records)
    assert verify(root).ok


def test_a_clock_step_back_is_logged_once_and_counted(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A step back is one warning with its size and one count, however many records follow
    while the clock catches up; a second step is logged again."""
    now = [1_800_000_000 * 10**9]
    before = counters().get("clock_steps_back", 0)
    with (
        caplog.at_level(logging.WARNING, "reasoning_trace"),
        DecisionLog(str(root), sync="never", clock=lambda: now[0]) as log,
    ):
        log.record("a", True, {}, {})
        now[0] -= 90 * 10**9
        for _ in range(5):
            log.record("b", True, {}, {})
            now[0] += 10**9
        now[0] += 100 * 10**9
        log.record("c", True, {}, {})
        now[0] -= 3 * 10**9
        log.record("d", True, {}, {})
    steps = [r.getMessage() for r in caplog.records if "behind the log's newest" in r.message]
    assert len(steps) == 2, steps
    assert "90.000000 s behind" in steps[0]
    assert counters()["clock_steps_back"] - before == 2
    assert counters()["clock_step_back_seconds"] >= 90
    check_order(root)
    assert verify(root).ok


# --- 2. recovery never destroys a complete record --------------------------------------------


def make_log(root: Path, n: int) -> None:
    """A log of ``n`` records written through the CLI-equivalent library, signed on close."""
    with DecisionLog(str(root), sync="never") as log:
        for i in range(n):
            log.record("gate", True, {"safety": {"passed": True}}, {"i": i})


def newest_day(root: Path) -> Path:
    """The newest day file of a log."""
    return sorted(root.glob("*.jsonl"))[-1]


def test_a_lost_final_newline_keeps_the_record(root: Path) -> None:
    """The issue's reproduction: 40 records, the final newline lost (truncate -s -1), then
    rtrace record: seq 39 is kept as it was, the new decision gets seq 40, verify exits 0."""
    make_log(root, 40)
    day = newest_day(root)
    before = day.read_bytes()
    subprocess.run(["truncate", "-s", "-1", str(day)], check=True)
    done = rtrace(root, "record", "--action", "next", "--approved")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["seq"] == 40
    assert day.read_bytes().startswith(before)
    assert not (root / "quarantine").exists()
    assert [r["seq"] for r in check_order(root)] == list(range(41))
    report = verify(root)
    assert report.ok and report.signed_size == 41, report.findings


def test_a_torn_partial_record_is_still_quarantined(root: Path) -> None:
    """Bytes after the last newline that are not a whole record go to quarantine/, and the
    next record takes the seq they never had."""
    make_log(root, 5)
    day = newest_day(root)
    with open(day, "ab") as fh:
        fh.write(b'{"v":1,"seq":5,"id":"x","acti')
    with DecisionLog(str(root), sync="never") as log:
        assert log.record("next", True, {}, {}).seq == 5
    assert [p.read_bytes() for p in (root / "quarantine").iterdir()] == [
        b'{"v":1,"seq":5,"id":"x","acti'
    ]
    check_order(root)
    report = verify(root)
    assert report.ok and "crash_fragment" in report.kinds()


def test_a_whole_record_with_a_wrong_seq_is_not_taken_in(root: Path) -> None:
    """A complete line without its newline whose seq does not follow is not a record of this
    log's sequence: it is quarantined, never given a seq twice."""
    make_log(root, 3)
    day = newest_day(root)
    last = day.read_bytes().splitlines()[-1]
    with open(day, "ab") as fh:
        fh.write(last)  # a copy of seq 2, without newline
    with DecisionLog(str(root), sync="never") as log:
        assert log.record("next", True, {}, {}).seq == 3
    assert len(list((root / "quarantine").iterdir())) == 1
    check_order(root)


def test_a_log_shorter_than_its_newest_checkpoint_refuses_to_write(root: Path) -> None:
    """Records removed below the newest signed checkpoint: the writer refuses with an error
    that names what it found, and writes nothing."""
    make_log(root, 10)
    day = newest_day(root)
    kept = b"".join(day.read_bytes().splitlines(keepends=True)[:7])
    day.write_bytes(kept)
    shutil.rmtree(root / ".rtrace")
    with DecisionLog(str(root), sync="never") as log, pytest.raises(UnreconciledLog) as err:
        log.record("next", True, {}, {})
    assert "holds 7 records" in str(err.value) and "covers 10" in str(err.value)
    assert day.read_bytes() == kept
    done = rtrace(root, "record", "--action", "next", "--approved")
    assert done.returncode != 0 and "covers 10" in done.stderr and "Traceback" not in done.stderr
    assert day.read_bytes() == kept


def test_a_head_the_day_files_do_not_reach_refuses_to_write(root: Path) -> None:
    """The lock file's head says more records were stored than the day files hold (and no
    checkpoint covers them yet): the writer refuses instead of re-using their seqs."""
    with DecisionLog(str(root), sync="never", checkpoint_every=0) as log:
        for i in range(6):
            log.record("gate", True, {}, {"i": i})
        log._store.tree = None  # type: ignore[attr-defined]  # no checkpoint on close
    day = newest_day(root)
    kept = b"".join(day.read_bytes().splitlines(keepends=True)[:4])
    day.write_bytes(kept)
    with DecisionLog(str(root), sync="never") as log, pytest.raises(UnreconciledLog) as err:
        log.record("next", True, {}, {})
    assert "holds 4 records" in str(err.value) and "stored 6" in str(err.value)
    assert day.read_bytes() == kept


def test_kill_during_repair_never_loses_or_repeats_a_record(root: Path) -> None:
    """Writers SIGKILLed at varied instants while they repair a torn tail or a lost newline:
    after a last clean writer, seqs are contiguous, nothing acknowledged is lost, verify is
    clean (crash fragments are notes)."""
    make_log(root, 20)
    rng = random.Random(7)
    acked: dict[int, str] = {}
    for round_ in range(12):
        day = newest_day(root)
        data = day.read_bytes()
        if not data.endswith(b"\n"):
            pass  # the last round's damage is not repaired yet: a writer always repairs first
        elif round_ % 2:
            day.write_bytes(data[:-1])  # lose the final newline of a whole record
        else:
            with open(day, "ab") as fh:
                fh.write(b'{"v":1,"seq":')  # a torn write
        proc = start_writer(root, f"k{round_}", 30, 2, "batch")
        assert proc.stdout is not None
        # Killed right away (before or during its repair) or after its k-th acknowledgement.
        wait_for = rng.choice([0, 0, 1, 3])
        early = [proc.stdout.readline() for _ in range(wait_for)]
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        for line in [*early, *out.splitlines()]:
            seq, rid = line.split()[:2]
            acked[int(seq)] = rid
    with DecisionLog(str(root), sync="batch") as log:
        log.record("final", True, {}, {})
    records = check_order(root)
    by_seq = {r["seq"]: r["id"] for r in records}
    for seq, rid in acked.items():
        assert by_seq[seq] == rid
    report = verify(root)
    assert report.ok, report.failures[:5]


# --- 3. checkpoint files survive a full disk -------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A real 2 MiB tmpfs, mounted for the test and unmounted after (needs root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def whole_lines(path: Path) -> list[bytes]:
    """The lines of a file, asserting it holds no partial line."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path} ends with a partial line"
    return data.splitlines()


def fill_until_full(log: DecisionLog, acked: list[int]) -> int:
    """Record decisions of shrinking size until the disk refuses every one; return failures."""
    failures = 0
    for size in (700, 700, 700, 300, 100, 30, 1):
        while True:
            try:
                acked.append(log.record("fill", True, {}, {"pad": "x" * size}).seq)
            except StorageError:
                failures += 1
                break
    return failures


def test_a_full_disk_leaves_no_torn_line_and_signing_resumes(small_disk: Path) -> None:
    """The issue's reproduction: a 2 MiB tmpfs with a 1,200 KiB filler, checkpoint_every=3,
    700-byte decisions until the disk is full, then the filler removed and 20 more decisions in
    the same process: no partial line in day or checkpoint files, nothing acknowledged lost,
    signing resumes by itself, checkpoint --now works and verify exits 0."""
    root = small_disk / "log"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 1200 * 1024)
    before = counters().get("checkpoint_write_failures", 0)
    acked: list[int] = []
    log = DecisionLog(str(root), checkpoint_every=3)
    try:
        assert fill_until_full(log, acked) >= 7
        for path in [*root.glob("*.jsonl"), *Checkpoints(root).files()]:
            whole_lines(path)
        assert counters().get("checkpoint_write_failures", 0) > before
        filler.unlink()
        for i in range(20):
            acked.append(log.record("after", True, {}, {"i": i}).seq)
        latest = Checkpoints(root).latest()
        assert latest is not None and latest.size >= len(acked) - 3
        assert log.checkpoint()
    finally:
        log.close()
    assert acked == list(range(len(acked)))
    assert [r["seq"] for r in check_order(root)] == acked
    for path in Checkpoints(root).files():
        whole_lines(path)
    done = rtrace(root, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    again = rtrace(root, "checkpoint", "--now")
    assert again.returncode == 0, again.stderr


def test_a_full_disk_then_a_new_process(small_disk: Path) -> None:
    """Disk full in one process (which then exits), space back, a new process records and signs:
    nothing acknowledged is lost and verify exits 0."""
    root = small_disk / "log"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 1200 * 1024)
    acked: list[int] = []
    with DecisionLog(str(root), checkpoint_every=3) as log:
        fill_until_full(log, acked)
    filler.unlink()
    done = rtrace(root, "record", "--action", "after", "--approved")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["seq"] == len(acked)
    assert [r["seq"] for r in check_order(root)] == [*acked, len(acked)]
    assert rtrace(root, "checkpoint", "--now").returncode == 0
    report = verify(root)
    assert report.ok and report.signed_size == len(acked) + 1, report.findings


def test_a_torn_checkpoint_line_from_an_old_crash_is_moved_aside(root: Path) -> None:
    """A checkpoint line a crash tore: readers ignore it, verify notes it as a crash artefact,
    and the next writer moves it to quarantine/ and signs on."""
    make_log(root, 4)
    cp_file = Checkpoints(root).files()[-1]
    with open(cp_file, "ab") as fh:
        fh.write(b'{"datetime_utc":"2026-')
    report = verify(root)
    assert report.ok and "torn_tail" in report.kinds(), report.findings
    assert rtrace(root, "checkpoint").returncode == 0
    make_log(root, 2)
    assert all(orjson.loads(line)["size"] for line in whole_lines(cp_file))
    assert [p.read_bytes() for p in (root / "quarantine").iterdir()] == [b'{"datetime_utc":"2026-']
    report = verify(root)
    assert report.ok and report.signed_size == 6 and "crash_fragment" in report.kinds()


def test_a_whole_checkpoint_line_missing_its_newline_gets_it_back(root: Path) -> None:
    """A checkpoint entry complete but for its newline is kept, its newline restored."""
    make_log(root, 4)
    cp_file = Checkpoints(root).files()[-1]
    cp_file.write_bytes(cp_file.read_bytes()[:-1])
    assert Checkpoints(root).latest() is None or Checkpoints(root).latest().size < 4  # type: ignore[union-attr]
    make_log(root, 1)
    sizes = [e.size for e in Checkpoints(root).entries()]
    assert 4 in sizes and sizes[-1] == 5
    assert not (root / "quarantine").exists()
    assert verify(root).ok


# --- 4. a signing key that cannot be used is an error ----------------------------------------


@pytest.mark.parametrize(
    "content",
    ["PRIVATE+KEY+garbage", "", "not a key at all\n", "PRIVATE+KEY+x+00000000+AAAA\n"],
    ids=["garbage", "empty", "text", "wrong-id"],
)
def test_a_corrupt_key_file_refuses_to_record(root: Path, signing_key: Path, content: str) -> None:
    """A corrupt key file: record fails with an error naming the key file, nothing is written;
    the CLI says so without a traceback."""
    make_log(root, 2)
    before = all_lines(root)
    signing_key.write_text(content)
    with DecisionLog(str(root), sync="never") as log, pytest.raises(SigningKeyError) as err:
        log.record("x", True, {}, {})
    assert str(signing_key) in str(err.value) and err.value.path == str(signing_key)
    assert all_lines(root) == before
    done = rtrace(root, "record", "--action", "x", "--approved")
    assert done.returncode != 0
    assert str(signing_key) in done.stderr and "Traceback" not in done.stderr
    assert all_lines(root) == before


def test_a_new_log_creates_its_key(root: Path, signing_key: Path) -> None:
    """A log that never published a key creates one on first record (mode 0600)."""
    assert not signing_key.exists()
    make_log(root, 1)
    assert signing_key.stat().st_mode & 0o777 == 0o600
    assert verify(root).ok


def test_a_missing_key_of_a_log_that_published_one_is_not_replaced(
    root: Path, signing_key: Path
) -> None:
    """The key of a log with published verifier keys vanished: recording refuses and says how
    to rotate deliberately; after `rtrace keys rotate` it records and verify stays clean."""
    make_log(root, 3)
    signing_key.unlink()
    with DecisionLog(str(root), sync="never") as log, pytest.raises(SigningKeyError) as err:
        log.record("x", True, {}, {})
    assert "rtrace keys rotate" in str(err.value) and str(signing_key) in str(err.value)
    assert not signing_key.exists()
    assert len(all_lines(root)) == 3
    assert rtrace(root, "keys", "rotate").returncode == 0
    make_log(root, 1)
    report = verify(root)
    assert report.ok and report.signed_size == 4, report.findings


# --- the whole kind: records, clock steps, crashes and restarts interleaved ------------------


class WriterUnderFaults(RuleBasedStateMachine):
    """Records, clock steps both ways across days, crashes that leave a write torn at any byte
    (or whole but for its newline), lost derived files and restarts, in any order. After each
    step: seqs contiguous and in file order, nothing acknowledged lost, verify clean."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="rtrace-faults-")) / "log"
        self.now = 1_799_971_170 * 10**9  # 30 s before 2027-01-15T00:00:00Z
        self.acked: dict[int, bytes] = {}
        self.unrepaired: tuple[int, bytes] | None = None  # a whole record without newline
        self.log: DecisionLog | None = None

    def open(self) -> DecisionLog:
        """The log, opened with this machine's clock if it is not open."""
        if self.log is None:
            self.log = DecisionLog(
                str(self.root), sync="never", clock=lambda: self.now, checkpoint_every=4
            )
        return self.log

    @rule(n=st.integers(1, 4))
    def record(self, n: int) -> None:
        """Record ``n`` decisions, each acknowledged with its stored line."""
        log = self.open()
        for _ in range(n):
            d = log.record("gate", True, {"safety": {"passed": True}}, {"at": self.now})
            self.acked[d.seq] = d.line
            self.now += 10**6
        if self.unrepaired is not None:  # the writer took it in before its own records
            seq, line = self.unrepaired
            self.acked[seq] = line
            self.unrepaired = None

    @rule(seconds=st.integers(-2 * 86_400, 2 * 86_400))
    def step_clock(self, seconds: int) -> None:
        """Step the clock, back or forward, possibly across one or more UTC days."""
        self.now += seconds * 10**9

    @rule(cut=st.floats(0, 1), whole=st.booleans())
    def crash_mid_write(self, cut: float, whole: bool) -> None:
        """Stop the writer, then leave the next record's line torn at any byte (or whole but for
        its newline), as a crash during the write would."""
        self.restart()
        days = sorted(self.root.glob("*.jsonl"))
        if not days or not days[-1].read_bytes().endswith(b"\n"):
            return  # nothing written yet, or a torn write no writer has repaired yet
        last = orjson.loads(days[-1].read_bytes().splitlines()[-1])
        line = orjson.dumps({**last, "seq": last["seq"] + 1, "id": str(uuid.uuid4())})
        torn = line if whole else line[: int(cut * (len(line) - 1))]
        with open(days[-1], "ab") as fh:
            fh.write(torn)
        if whole:  # a whole record is a record: the next writer keeps it
            self.unrepaired = (last["seq"] + 1, line)

    @rule()
    def lose_derived_files(self) -> None:
        """Stop the writer and delete .rtrace (derived: documented as safe)."""
        self.restart()
        shutil.rmtree(self.root / ".rtrace", ignore_errors=True)

    @rule()
    def restart(self) -> None:
        """Close the writer (a new one opens on the next record)."""
        if self.log is not None:
            self.log.close()
            self.log = None

    @invariant()
    def log_is_whole_and_in_order(self) -> None:
        """Seq contiguous in file order, instants never back, nothing acknowledged lost,
        verify clean (torn tails not yet repaired are notes)."""
        if not self.root.exists():
            return
        lines: list[bytes] = []
        for path in sorted(self.root.glob("*.jsonl")):
            data = path.read_bytes()
            lines.extend(data[: data.rfind(b"\n") + 1].splitlines())
        records = [orjson.loads(line) for line in lines]
        assert [r["seq"] for r in records] == list(range(len(records)))
        instants = [parse_utc(r["datetime_utc"]) for r in records]
        assert instants == sorted(instants)
        for seq, line in self.acked.items():
            assert lines[seq] == line
        report = verify(self.root)
        assert report.ok, report.failures[:3]

    def teardown(self) -> None:
        """Close the log and remove its files."""
        self.restart()
        shutil.rmtree(self.root.parent, ignore_errors=True)


WriterUnderFaults.TestCase.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None
)
test_writer_under_faults = WriterUnderFaults.TestCase


def test_deleting_derived_files_under_running_writers_never_repeats_a_seq(root: Path) -> None:
    """.rtrace/ is deleted again and again while three multi-threaded writer processes run:
    no seq is given twice, nothing acknowledged is lost, verify is clean (the writer lock is
    the root directory, not a file under .rtrace/)."""
    make_log(root, 1)
    procs = [start_writer(root, f"p{i}", 150, 4, "batch") for i in range(3)]
    deletions = 0
    while any(p.poll() is None for p in procs):
        shutil.rmtree(root / ".rtrace", ignore_errors=True)
        deletions += 1
    acked: dict[int, str] = {}
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
        for line in out.splitlines():
            seq, rid = line.split()[:2]
            assert int(seq) not in acked, f"seq {seq} acknowledged twice"
            acked[int(seq)] = rid
    assert deletions > 1 and len(acked) == 1800
    records = check_order(root)
    assert len(records) == 1801
    by_seq = {r["seq"]: r["id"] for r in records}
    assert all(by_seq[s] == rid for s, rid in acked.items())
    report = verify(root)
    assert report.ok, report.failures[:3]


def test_a_checkpoint_line_torn_by_another_process_under_a_running_writer(root: Path) -> None:
    """Another writer crashed mid checkpoint line while this one runs: this writer moves the
    torn bytes aside before its next checkpoint instead of welding onto them, and signs on."""
    with DecisionLog(str(root), sync="never", checkpoint_every=2) as log:
        for _ in range(4):
            log.record("a", True, {}, {})
        cp_file = Checkpoints(root).files()[-1]
        with open(cp_file, "ab") as fh:
            fh.write(cp_file.read_bytes()[:100])
        for _ in range(4):
            log.record("a", True, {}, {})
    assert all(orjson.loads(line)["size"] for line in whole_lines(cp_file))
    report = verify(root)
    assert report.ok and report.signed_size == 8, report.findings
    assert rtrace(root, "checkpoint", "--now").returncode == 0


def test_a_key_that_cannot_be_created_is_a_clear_error(root: Path, tmp_path: Path) -> None:
    """A key folder that cannot be written: record refuses with an error naming the key file,
    the CLI prints it without a traceback, nothing is written."""
    folder = tmp_path / "keys"
    folder.mkdir()
    key = folder / "sub" / "signing.key"
    (folder / "sub").write_text("a file where the key's folder should be")
    done = rtrace(
        root, "record", "--action", "a", "--approved", env={"REASONING_TRACE_KEY": str(key)}
    )
    assert done.returncode == 2 and str(key) in done.stderr and "Traceback" not in done.stderr
    assert not list(root.glob("*.jsonl"))


def lock_is_free(root: Path) -> bool:
    """Whether another writer could take the writer lock (an flock of the root) right now."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def test_a_hash_file_cut_under_a_writer_never_fails_a_stored_batch(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """.rtrace/hashes (derived) cut to nothing while a writer keeps the lock between batches,
    the next batch falling due for a checkpoint: the batch is stored and acknowledged (no
    exception escapes a write that is on disk), and the writer lock is let go."""
    monkeypatch.setattr(files, "LEASE_SECONDS", 3600.0)  # the lease is kept, whatever the pace
    store = files.FileStore(root, sync="never", tree=lambda r: SignedTree(r, every=2, seconds=0))
    try:
        store.append([prepare("warm", True, {}, {})])
        store.append([prepare("a", True, {}, {})], keep_lock=True)  # size 2, signed
        assert not lock_is_free(root)  # the lease: held until the next batch
        os.truncate(root / ".rtrace" / "hashes", 0)
        stored = store.append([prepare("b", True, {}, {}), prepare("c", True, {}, {})])
        assert [d.seq for d in stored] == [2, 3]  # type: ignore[union-attr]
        assert lock_is_free(root)
    finally:
        store.close()
    assert [orjson.loads(line)["seq"] for line in all_lines(root)] == [0, 1, 2, 3]


def test_a_damaged_hash_file_never_stops_signing(root: Path) -> None:
    """A stored hash in .rtrace/hashes (derived) damaged behind the writers' back: the next
    writer does not call the log's history rewritten and stop signing; it hashes the day files
    afresh and signs on, and verify is clean."""
    with DecisionLog(str(root), sync="never", checkpoint_every=0) as log:
        for i in range(10):
            log.record("a", True, {}, {"i": i})
    hashes = root / ".rtrace" / "hashes"
    data = bytearray(hashes.read_bytes())
    data[stored_hash_index(1, 4) * 32] ^= 1  # the node over records 8 and 9
    hashes.write_bytes(bytes(data))
    with DecisionLog(str(root), sync="never", checkpoint_every=0) as log:
        for i in range(10, 12):
            log.record("a", True, {}, {"i": i})
        assert log.checkpoint().split("\n")[1] == "12"
    latest = Checkpoints(root).latest()
    assert latest is not None and latest.size == 12
    report = verify(root)
    assert report.ok and report.signed_size == 12, report.findings


def damage_head(root: Path, field: int, value: bytes) -> None:
    """Overwrite one field of the head cached in .rtrace/lock, as a damaged disk or another
    program could (``<next_seq> <day> <size> <inode> <micros>``)."""
    path = root / ".rtrace" / "lock"
    raw = path.read_bytes()
    parts = raw[:96].split()  # the head; what follows it is kept as it is
    parts[field] = value
    path.write_bytes(b" ".join(parts).ljust(96, b" ") + raw[96:])


@pytest.mark.parametrize(
    ("field", "value"),
    [(0, b"2"), (4, b"253402300799000000")],
    ids=["seq-lowered", "instant-in-9999"],
)
def test_a_damaged_head_file_never_repeats_a_seq_nor_sets_time_ahead(
    root: Path, field: int, value: bytes
) -> None:
    """The head in .rtrace/lock (derived) damaged while its day file is untouched: readers
    count the records the day files hold, and the next writer gives no seq twice and stamps
    no record at the damaged instant; verify is clean."""
    make_log(root, 5)
    damage_head(root, field, value)
    with DecisionLog(str(root)) as reader:
        assert len(reader) == 5
    with DecisionLog(str(root), sync="never") as log:
        for i in range(2):
            log.record("after", True, {}, {"i": i})
    records = check_order(root)
    assert [r["seq"] for r in records] == list(range(7))
    assert parse_utc(records[-1]["datetime_utc"]) < time.time_ns() // 1000 + 86_400_000_000
    report = verify(root)
    assert report.ok, report.findings


def test_a_full_disk_before_the_first_record_is_a_storage_error(small_disk: Path) -> None:
    """A new log on a disk with no room left: the first record is refused with a
    StorageError (not a bare OSError), the CLI says so without a traceback, nothing is
    written."""
    fd = os.open(small_disk / "filler", os.O_WRONLY | os.O_CREAT)
    with contextlib.suppress(OSError):
        while True:
            os.write(fd, b"\0" * 4096)
    os.close(fd)
    root = small_disk / "log"
    with DecisionLog(str(root)) as log, pytest.raises(StorageError):
        log.record("first", True, {}, {})
    done = rtrace(root, "record", "--action", "first", "--approved")
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert not list(root.glob("*.jsonl"))


def test_the_writer_never_writes_through_a_symbolic_link(root: Path, tmp_path: Path) -> None:
    """Links planted where the writer writes (whoever can write the log's folder can plant
    them): derived files and the checkpoint's temporary file are made afresh beside them,
    a linked day file is refused; the files they point at are never written."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me\n")
    make_log(root, 2)
    for name in (".rtrace/lock", ".rtrace/hashes", ".rtrace/index.sqlite", ".checkpoint.tmp"):
        (root / name).unlink(missing_ok=True)
        (root / name).symlink_to(victim)
    with DecisionLog(str(root), sync="never") as log:
        log.record("after", True, {}, {}, id="by-id")
        assert log.get("by-id").seq == 2
        log.checkpoint()
    assert victim.read_bytes() == b"keep me\n"
    assert not (root / "checkpoint").is_symlink()
    report = verify(root)
    assert report.ok and report.signed_size == 3, report.findings
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "2026-11-25.jsonl").symlink_to(victim)
    noon = 1795608000 * 1_000_000_000  # 2026-11-25T12:00:00Z
    with DecisionLog(str(linked), clock=lambda: noon) as log, pytest.raises(StorageError):
        log.record("linked", True, {}, {})
    assert victim.read_bytes() == b"keep me\n"
