"""The fast first build of the derived index (``index_build.py``) and the aggregates ``stats``
reads (``index_stats.py``): the same answers as a full read of the day files, whole after a
build killed with SIGKILL, right after more appends, and never believed once edited."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from reasoning_trace import DecisionLog, Filter
from reasoning_trace.layout import reader_cache
from reasoning_trace.query import Stats

DAY_US = 86_400_000_000
DAY0_US = 1795564800 * 1_000_000 - 20 * DAY_US  # twenty days before 2026-11-25
ACTIONS = ("halt", "upgrade", "rollback")
VOTERS = ("safety", "cost", "alignment")


class Clock:
    """A clock set by hand, in microseconds (the store reads nanoseconds)."""

    def __init__(self, micros: int) -> None:
        self.micros = micros

    def __call__(self) -> int:
        return self.micros * 1000


def decision(i: int) -> dict[str, object]:
    """Decision number ``i``: actions, verdicts, vetoes and subjects that vary with it."""
    votes = {v: {"passed": (i * 7 + k) % 5 != 0} for k, v in enumerate(VOTERS)}
    return {
        "action": ACTIONS[i % 3],
        "approved": all(v["passed"] for v in votes.values()),
        "votes": votes,
        "subject": {"agent_id": f"a{i % 4}", "i": i, "flag": i % 2 == 0},
    }


def write_days(root: Path, days: int, per_day: int, first: int = 0) -> None:
    """Record ``per_day`` decisions on each of ``days`` days from day ``first`` (one batch a
    day, each a few seconds after the last)."""
    clock = Clock(DAY0_US)
    with DecisionLog(str(root), sync="never", clock=clock) as log:
        for day in range(first, first + days):
            clock.micros = DAY0_US + day * DAY_US + 3_600_000_000
            batch = [decision(day * per_day + i) for i in range(per_day)]
            for result in log.record_many(batch):
                assert not isinstance(result, Exception), result


def reader(root: Path) -> DecisionLog:
    """A reading log (its index in the per-user cache)."""
    return DecisionLog(str(root), create=False)


def scanned(root: Path, flt: Filter) -> Stats:
    """The stats of a full read of the day files, no index involved."""
    with reader(root) as log:
        return Stats.of(log.select(flt))


FILTERS = {
    "all": Filter(),
    "halt": Filter.build(action="halt"),
    "rejected": Filter.build(approved=False),
    "vetoed": Filter.build(voter="safety"),
    "agent": Filter.build(subject={"agent_id": "a1"}),
    "typed": Filter.build(subject={"i": 7}),
    "days": Filter(since_us=DAY0_US + 3 * DAY_US, until_us=DAY0_US + 7 * DAY_US),
    "partial": Filter(
        since_us=DAY0_US + 2 * DAY_US + 3_600_000_000, until_us=DAY0_US + 6 * DAY_US + 1
    ),
    "halt_days": Filter(action="halt", approved=True, since_us=DAY0_US + 5 * DAY_US),
}


def answers(root: Path) -> dict[str, object]:
    """What a reader answers for each filter: the lines, pages and stats."""
    out: dict[str, object] = {}
    with reader(root) as log:
        for name, flt in FILTERS.items():
            out[name] = [d.line for d in log.query(flt)]
            out[f"{name} newest"] = [d.seq for d in log.query(flt, newest_first=True, limit=4)]
            out[f"{name} stats"] = log.stats(flt)
    return out


def expected(root: Path) -> dict[str, object]:
    """The same answers from a full read of the day files."""
    out: dict[str, object] = {}
    with reader(root) as log:
        every = list(log.select(Filter()))
    for name, flt in FILTERS.items():
        found = [d for d in every if flt.matches(d)]
        out[name] = [d.line for d in found]
        out[f"{name} newest"] = [d.seq for d in found[::-1][:4]]
        out[f"{name} stats"] = Stats.of(found)
    return out


def cache_index(root: Path) -> Path:
    """The reader's index database of ``root``."""
    return reader_cache(root) / "index.sqlite"


@pytest.fixture
def year(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Ten day files of 300 decisions (3,000), the per-user cache under ``tmp_path``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "log"
    write_days(root, 10, 300)
    return root


def test_the_fast_build_answers_as_a_full_read(year: Path) -> None:
    """A first build over ten day files (the parallel path) gives exactly the lines, pages
    and stats a full read of the day files gives, for every kind of filter, subjects too."""
    got = answers(year)
    want = expected(year)
    for key, value in want.items():
        assert got[key] == value, key
    assert got["all stats"].total == 3000  # type: ignore[attr-defined]


def test_stats_stay_right_as_the_log_grows(year: Path) -> None:
    """After the first build, records appended to the last day and on new days are counted
    once each by the aggregates, and every answer still equals a full read."""
    answers(year)  # builds the index
    write_days(year, 1, 50, first=9)  # the same day as the last one
    answers(year)
    write_days(year, 2, 40, first=10)
    got = answers(year)
    want = expected(year)
    for key, value in want.items():
        assert got[key] == value, key
    assert got["all stats"].total == 3000 + 50 + 80  # type: ignore[attr-defined]
    db = sqlite3.connect(cache_index(year))
    try:
        assert db.execute("SELECT SUM(n) FROM agg_counts").fetchone()[0] == 3130
        assert db.execute("SELECT COUNT(*) FROM agg_files").fetchone()[0] == 12
    finally:
        db.close()


def test_edited_aggregates_are_never_believed(year: Path) -> None:
    """Aggregate rows edited in the index database (counts, a voter's vetoes, the times it
    holds for a file), a day file edited behind its back to the same size with its mtime put
    back, or the key of the
    tags lost, leave ``stats`` the stats of the day files; the counts are then made afresh
    from the day files."""
    answers(year)
    db = sqlite3.connect(cache_index(year))
    with db:
        db.execute(
            "UPDATE agg_counts SET n = n * 2 WHERE rday = (SELECT MIN(rday) FROM agg_counts)"
        )
        db.execute("UPDATE agg_counts SET n = n + 1 WHERE action = 'halt' AND approved = 1")
        db.execute("UPDATE agg_files SET lo = lo + 1, hi = hi - 1")
        db.execute("DELETE FROM agg_vetoes WHERE voter = 'safety'")
    db.close()
    for flt in (Filter(), Filter.build(action="halt"), FILTERS["days"]):
        with reader(year) as log:
            assert log.stats(flt) == scanned(year, flt)
    day = sorted(year.glob("*.jsonl"))[4]
    data = day.read_bytes()
    assert b'"action":"halt"' in data
    before = day.stat()
    day.write_bytes(data.replace(b'"action":"halt"', b'"action":"hal7"', 1))
    os.utime(day, ns=(before.st_atime_ns, before.st_mtime_ns))  # as `touch -d` puts it back
    assert (day.stat().st_size, day.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    with reader(year) as log:
        stats = log.stats()
    assert stats == scanned(year, Filter())
    assert "hal7" in {a.action for a in stats.actions}
    (cache_index(year).parent / "index.sqlite.key").unlink()  # every tag is now wrong
    for _ in range(2):  # counted from the records, then from counts made afresh
        with reader(year) as log:
            assert log.stats() == stats
            assert log.stats(FILTERS["days"]) == scanned(year, FILTERS["days"])
    db = sqlite3.connect(cache_index(year))
    try:
        assert db.execute("SELECT SUM(n) FROM agg_counts").fetchone()[0] == 3000
        halts = "SELECT SUM(n) FROM agg_counts WHERE action = 'halt'"
        assert db.execute(halts).fetchone()[0] == next(
            a.total for a in stats.actions if a.action == "halt"
        )
    finally:
        db.close()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: the build runs no workers")
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
def test_a_build_killed_midway_leaves_no_half_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader process killed with SIGKILL while it builds the index (its parsing workers
    running) leaves the index without any of the build's rows; the next reader builds it
    whole and answers as a full read does."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    root = tmp_path / "log"
    write_days(root, 30, 1500)
    code = textwrap.dedent(
        f"""
        from reasoning_trace import CorruptLine, DecisionLog, Filter
        with DecisionLog({str(root)!r}, create=False) as log:
            log.query(Filter.build(action="halt"), limit=1, newest_first=True)
        print("built")
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL)
    children = Path(f"/proc/{child.pid}/task/{child.pid}/children")
    deadline = time.monotonic() + 120
    workers: list[str] = []
    while child.poll() is None and time.monotonic() < deadline:
        workers = children.read_text().split() if children.exists() else []
        if workers:
            break  # the workers are parsing: the build is under way
        time.sleep(0.002)  # (a poll: the condition is seen, not waited for blindly)
    else:
        child.kill()
        pytest.fail("the build finished before its workers were seen")
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL
    for pid in workers:  # they end with it
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError, FileNotFoundError):
                if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                    break
        assert time.monotonic() < deadline, f"worker {pid} outlived its build"
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
    index = cache_index(root)
    db = sqlite3.connect(index)
    try:
        assert db.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 0
    finally:
        db.close()
    with reader(root) as log:
        assert log.stats() == scanned(root, Filter())
        halts = [d.seq for d in log.query(Filter.build(action="halt"))]
    assert halts == [s for s in range(45_000) if s % 3 == 0]
    db = sqlite3.connect(index)
    try:
        assert db.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 45_000
    finally:
        db.close()
