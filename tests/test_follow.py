"""Following a file store live (``follow.py``): records other processes write, each once and in
seq order; across UTC midnight on a fake clock (libfaketime); starting after a seq, from now or from
before the start; a line still being written (or torn by a crash) is not taken until whole; the
original module's lines; ``stop()`` and closing the log end it. Every wait has a deadline."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reasoning_trace import DecisionLog
from reasoning_trace.record import Decision, format_utc, prepare

from .conftest import HERE, all_lines
from .fake_clock import HERE as CLOCK_HERE
from .fake_clock import FakeClock, needs_fake_clock
from .test_processes import start_writer

SEED_WRITER = str(HERE / "seed_writer.py")


class Follower:
    """``log.follow(after_seq)`` running in a thread: what it yielded, and how many times it
    found nothing new and asked whether to stop (``polls``), so a test can wait for it to have
    looked again. The starting point is fixed when this is made."""

    def __init__(self, log: DecisionLog, after_seq: int | None) -> None:
        self.seen: list[Decision] = []
        self.polls = 0
        self.error: BaseException | None = None
        self.ended = False
        self._cond = threading.Condition()
        self._done = threading.Event()
        records = log.follow(after_seq, stop=self._stop)
        self.thread = threading.Thread(target=self._run, args=(records,), daemon=True)
        self.thread.start()

    def _stop(self) -> bool:
        """The ``stop`` callable handed to ``follow``: count the idle poll, say whether to
        stop."""
        with self._cond:
            self.polls += 1
            self._cond.notify_all()
        return self._done.is_set()

    def _run(self, records: Iterator[Decision]) -> None:
        """Take what ``follow`` yields until it ends; keep what it raised."""
        try:
            for d in records:
                with self._cond:
                    self.seen.append(d)
                    self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 -- reported by wait()
            self.error = exc
        finally:
            with self._cond:
                self.ended = True
                self._cond.notify_all()

    def wait(self, done: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        """Wait until ``done()`` holds; fail (never hang) after ``timeout`` seconds or if the
        follower raised."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not done():
                left = deadline - time.monotonic()
                assert self.error is None, f"follow raised {self.error!r}"
                assert left > 0, f"{what}: not within {timeout} s (seen {self.seqs()})"
                self._cond.wait(left)
            assert self.error is None, f"follow raised {self.error!r}"

    def wait_for(self, count: int) -> None:
        """Wait until ``count`` decisions came."""
        self.wait(lambda: len(self.seen) >= count, f"{count} decisions")

    def looked_again(self) -> None:
        """Wait until the follower read the log afresh after this call: the second idle poll
        after now began after now."""
        start = self.polls
        self.wait(lambda: self.polls >= start + 2, "two more polls")

    def seqs(self) -> list[int]:
        """The seqs seen so far."""
        return [d.seq for d in self.seen]

    def stop(self) -> None:
        """Ask it to stop; assert it ended."""
        self._done.set()
        self.wait(lambda: self.ended, "the end of following")
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def reader(root: Path) -> Iterator[DecisionLog]:
    """A log open only to read (the root is created)."""
    with DecisionLog(str(root)) as log:
        yield log


def write(root: Path, n: int, action: str = "w") -> list[Decision]:
    """Record ``n`` decisions in this process and close the writer."""
    with DecisionLog(str(root), sync="never") as log:
        return [log.record(action, True, {}, {"i": i}) for i in range(n)]


def finish(proc: subprocess.Popen[str]) -> list[str]:
    """Wait for a writer process; assert it succeeded; its acknowledgement lines."""
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    return out.splitlines()


# --- other processes write ------------------------------------------------------------------


def test_records_from_other_processes_come_once_in_seq_order(
    root: Path, reader: DecisionLog
) -> None:
    """Three writer processes of two threads each: the follower yields every record once, in
    seq order, with the bytes stored in the day files."""
    follower = Follower(reader, None)
    try:
        procs = [start_writer(root, f"p{n}", 100, 2, "batch") for n in range(3)]
        acked = [line for proc in procs for line in finish(proc)]
        assert len(acked) == 600
        follower.wait_for(600)
        follower.looked_again()
        assert follower.seqs() == list(range(600))
        assert [d.line for d in follower.seen] == all_lines(root)
    finally:
        follower.stop()


MIDNIGHT_WRITER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timedelta, timezone
    sys.path.append(sys.argv[4])
    from fake_clock import move_clock
    from reasoning_trace import DecisionLog
    root, tag, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
    when = datetime(2026, 5, 1, 23, 59, start, tzinfo=timezone.utc)
    i = after = 0
    with DecisionLog(root, sync="batch") as log:
        while after < 20:
            move_clock(when.strftime("%Y-%m-%d %H:%M:%S.%f"))
            if when.day == 2 and after == 0:  # midnight: wait until told to go on
                print("midnight", flush=True)
                assert sys.stdin.readline() == "go\\n"
            day = log.record("m", True, {}, {"tag": tag, "i": i}).day
            assert day == when.strftime("%Y-%m-%d"), (day, when)
            after += when.day == 2
            i += 1
            when += timedelta(seconds=0.25)
    """
)


@needs_fake_clock
def test_following_across_utc_midnight(root: Path, reader: DecisionLog, tmp_path: Path) -> None:
    """Two writer processes whose clocks cross UTC midnight, starting a second apart (23:59:58
    and 23:59:57) and moving a quarter of a (fake) second per record: both stop at midnight
    until the follower, started before any record, has yielded their 20 records of the old
    day; then each records 20 on the new day. The follower moves to the new day file and
    yields every record once, in seq order."""
    follower = Follower(reader, None)
    procs: list[subprocess.Popen[str]] = []
    try:
        for start, tag in ((58, "ahead"), (57, "behind")):
            clock = FakeClock(tmp_path / f"clock-{tag}", f"2026-05-01 23:59:{start}")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", MIDNIGHT_WRITER, str(root), tag, str(start), CLOCK_HERE],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=clock.env(),
                )
            )
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline() != "midnight\n":
                finish(proc)  # it ended early: fails with its stderr
                raise AssertionError("the writer never reached midnight")
        follower.wait_for(8 + 12)  # ahead: 23:59:58.00-.59.75; behind: 23:59:57.00-.59.75
        follower.looked_again()
        assert follower.seqs() == list(range(20))
        assert {d.day for d in follower.seen} == {"2026-05-01"}
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            finish(proc)
        total = len(all_lines(root))
        assert total == 20 + 2 * 20
        follower.wait_for(total)
        follower.looked_again()
        assert follower.seqs() == list(range(total))
        assert [d.line for d in follower.seen] == all_lines(root)
        assert [d.day for d in follower.seen] == ["2026-05-01"] * 20 + ["2026-05-02"] * 40
        assert sorted(p.name for p in root.glob("*.jsonl")) == [
            "2026-05-01.jsonl",
            "2026-05-02.jsonl",
        ]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        follower.stop()


# --- where following starts -----------------------------------------------------------------


def test_following_starts_after_a_seq_from_now_or_from_before_the_start(
    root: Path, reader: DecisionLog
) -> None:
    """Started before another process writes ten more: after seq 4 it yields 5..19; from now
    (``None``) 10..19; from before the start (-1, or far below) 0..19; after a seq beyond
    the head, only what comes after that seq."""
    write(root, 10)
    followers = {
        "after 4": Follower(reader, 4),
        "now": Follower(reader, None),
        "start": Follower(reader, -1),
        "far below": Follower(reader, -1000),
        "beyond": Follower(reader, 14),
    }
    wanted = {
        "after 4": range(5, 20),
        "now": range(10, 20),
        "start": range(20),
        "far below": range(20),
        "beyond": range(15, 20),
    }
    try:
        finish(start_writer(root, "later", 10, 1, "batch"))
        for name, follower in followers.items():
            follower.wait_for(len(wanted[name]))
            follower.looked_again()
            assert follower.seqs() == list(wanted[name]), name
    finally:
        for follower in followers.values():
            follower.stop()


# --- lines not yet whole ----------------------------------------------------------------------


def test_a_line_being_written_is_taken_only_when_whole(root: Path, reader: DecisionLog) -> None:
    """A record line whose first bytes are in the day file but not its newline is not
    yielded, however often the follower looks; once its last bytes land it is yielded whole,
    and a writer process's next record after it."""
    made = write(root, 3)
    follower = Follower(reader, None)
    try:
        micros = round(made[-1].timestamp * 1_000_000) + 1
        line = prepare("slow", True, {}, {"big": "y" * 5000}).compose(3, micros, format_utc(micros))
        day = root / f"{made[-1].day}.jsonl"
        cuts = [0, 1, 100, len(line) // 2, len(line)]  # at last the whole line but its newline
        with open(day, "ab", buffering=0) as fh:
            for start, end in itertools.pairwise(cuts):
                fh.write(line[start:end])
                follower.looked_again()
                assert follower.seen == []
            fh.write(b"\n")
        follower.wait_for(1)
        assert follower.seen[0].line == line and follower.seen[0].seq == 3
        finish(start_writer(root, "next", 1, 1, "batch"))
        follower.wait_for(2)
        follower.looked_again()
        assert follower.seqs() == [3, 4]
    finally:
        follower.stop()


def test_a_torn_tail_is_never_yielded_and_the_repairing_writers_record_is(
    root: Path, reader: DecisionLog
) -> None:
    """A crash left half a line: the follower does not yield it; the next writer process
    moves it to quarantine and writes its own record with that seq, which the follower
    yields."""
    made = write(root, 3)
    follower = Follower(reader, None)
    try:
        with open(root / f"{made[-1].day}.jsonl", "ab") as fh:
            fh.write(b'{"action":"torn","approved":true,"datetime_utc":"2026-')
        follower.looked_again()
        assert follower.seen == []
        finish(start_writer(root, "repair", 1, 1, "batch"))
        follower.wait_for(1)
        follower.looked_again()
        assert follower.seqs() == [3]
        assert follower.seen[0].action == "w" and follower.seen[0].line == all_lines(root)[3]
        assert [p.read_bytes()[:20] for p in (root / "quarantine").iterdir()] == [
            b'{"action":"torn","ap'
        ]
    finally:
        follower.stop()


# --- the original module's lines ---------------------------------------------------------------


def seed_writer(root: Path, count: int, tag: str) -> subprocess.Popen[str]:
    """The original module writing ``count`` records in its own process."""
    return subprocess.Popen(
        [sys.executable, SEED_WRITER, str(root), str(count), "10", tag],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_original_modules_lines_after_this_logs_records_are_passed_over(
    root: Path, reader: DecisionLog
) -> None:
    """The original module, still running beside this product, appends lines: the follower
    does not yield them (they have no seq); the next writer takes their content in as new
    records, which the follower yields once each, in seq order, before that writer's own."""
    write(root, 3)
    follower = Follower(reader, None)
    try:
        assert len(finish(seed_writer(root, 3, "old"))) == 3
        follower.looked_again()
        assert follower.seen == []
        finish(start_writer(root, "new", 1, 1, "batch"))
        follower.wait_for(4)
        follower.looked_again()
        assert follower.seqs() == [3, 4, 5, 6]
        taken = follower.seen[:3]
        assert [d.subject for d in taken] == [{"agent_id": "agent-old", "i": i} for i in range(3)]
        assert all(d.v == 1 and "legacy_source" in d.extra for d in taken)
        assert follower.seen[3].subject["tag"] == "new"
    finally:
        follower.stop()


def test_following_a_log_the_original_module_writes(root: Path, reader: DecisionLog) -> None:
    """A log only the original module wrote is read with its lines as legacy records whose seq
    is their position: following from before the start yields them, then those it appends
    meanwhile, then this product's first record, exactly as ``read`` gives them."""
    finish(seed_writer(root, 3, "old"))
    follower = Follower(reader, -1)
    try:
        follower.wait_for(3)
        finish(seed_writer(root, 2, "old2"))
        follower.wait_for(5)
        finish(start_writer(root, "new", 1, 1, "batch"))
        follower.wait_for(6)
        follower.looked_again()
        assert follower.seqs() == list(range(6))
        assert [d.line for d in follower.seen] == [d.line for d in reader.read(0)]
        assert [d.v for d in follower.seen] == [0] * 5 + [1]
    finally:
        follower.stop()


# --- the end -----------------------------------------------------------------------------------


def test_stop_and_close_end_following(root: Path) -> None:
    """A follower waiting on a quiet log ends when ``stop()`` says so, and when its log is
    closed; neither needs a record to arrive."""
    write(root, 2)
    log = DecisionLog(str(root))
    try:
        by_stop = Follower(log, None)
        by_close = Follower(log, 0)
        by_close.wait_for(1)
        by_stop.looked_again()
        by_stop.stop()
        assert by_stop.seen == []
        log.close()
        by_close.wait(lambda: by_close.ended, "the end after close")
        assert by_close.seqs() == [1]
    finally:
        log.close()
