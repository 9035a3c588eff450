"""DecisionLog behaviour: day files, reading, idempotent ids, threads, follow, midnight, and
batches (``record_many``)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from reasoning_trace import ConflictError, DecisionLog, NotFound, QueryError, RecordError
from reasoning_trace.files import FileStore
from reasoning_trace.record import Decision, Pending
from reasoning_trace.store import AppendResult

from .conftest import SUBJECT, VOTES, all_lines

MIDNIGHT_US = 1795651200 * 1_000_000  # 2026-11-26T00:00:00Z


class Clock:
    """A hand-driven clock in nanoseconds, for records on both sides of midnight."""

    def __init__(self, micros: int) -> None:
        self.micros = micros

    def __call__(self) -> int:
        self.micros += 1
        return self.micros * 1000


def test_day_file_is_the_records_own_day(root: Path) -> None:
    """Records before and after UTC midnight land in the files of their own timestamps."""
    clock = Clock(MIDNIGHT_US - 3)
    with DecisionLog(str(root), sync="never", clock=clock) as log:
        ds = [log.record("a", True, {}, {"i": i}) for i in range(6)]
    assert [d.day for d in ds] == ["2026-11-25"] * 2 + ["2026-11-26"] * 4
    assert ds[2].datetime_utc == "2026-11-26T00:00:00.000000Z"
    assert sorted(p.name for p in root.glob("*.jsonl")) == ["2026-11-25.jsonl", "2026-11-26.jsonl"]
    assert len((root / "2026-11-25.jsonl").read_bytes().splitlines()) == 2
    for d in ds:
        assert d.line in (root / f"{d.day}.jsonl").read_bytes().splitlines()


def test_recent_crosses_midnight(root: Path) -> None:
    """recent() returns the newest records oldest first, across day files."""
    clock = Clock(MIDNIGHT_US - 5)
    with DecisionLog(str(root), sync="never", clock=clock) as log:
        for i in range(10):
            log.record("a", True, {}, {"i": i})
        recent = log.recent(7)
    assert [d.seq for d in recent] == list(range(3, 10))
    assert {d.day for d in recent} == {"2026-11-25", "2026-11-26"}
    with DecisionLog(str(root)) as log:
        assert [d.seq for d in log.recent(200)] == list(range(10))
        assert log.recent(0) == []


def test_get_by_seq_and_id(log: DecisionLog) -> None:
    """get() finds a decision by seq, by numeric string and by id; unknown keys raise NotFound."""
    ds = [log.record("a", True, VOTES, SUBJECT) for _ in range(5)]
    assert log.get(3) == ds[3]
    assert log.get("3") == ds[3]
    assert log.get(ds[4].id) == ds[4]
    for key in (5, -1, "nope"):
        with pytest.raises(NotFound):
            log.get(key)


def test_index_is_derived(root: Path) -> None:
    """Deleting the derived directory loses nothing: get() and the next seq are rebuilt."""
    with DecisionLog(str(root), sync="never") as log:
        ds = [log.record("a", True, {}, {}, id=f"x{i}") for i in range(4)]
        assert log.get("x2") == ds[2]
    import shutil

    shutil.rmtree(root / ".rtrace")
    with DecisionLog(str(root), sync="never") as log:
        assert log.get("x2") == ds[2]
        assert log.record("b", True, {}, {}).seq == 4


def test_iter_filters(log: DecisionLog) -> None:
    """iter() applies action, verdict, voter (voted against), subject and time filters."""
    log.record("upgrade", True, {"s": {"passed": True}}, {"agent_id": "a", "version": 3})
    log.record("upgrade", False, {"s": {"passed": False}}, {"agent_id": "b", "version": 3})
    log.record("halt", False, {"c": {"passed": False}}, {"agent_id": "a", "version": "3"})
    seqs = lambda **kw: [d.seq for d in log.iter(**kw)]  # noqa: E731
    assert seqs() == [0, 1, 2]
    assert seqs(action="upgrade") == [0, 1]
    assert seqs(approved=False) == [1, 2]
    assert seqs(voter="s") == [1]
    assert seqs(subject={"agent_id": "a"}) == [0, 2]
    assert seqs(subject={"version": "3"}) == [0, 1, 2]
    assert seqs(subject={"version": 3}) == [0, 1]
    assert seqs(since="1h") == [0, 1, 2]
    assert seqs(until="2000-01-01") == []
    with pytest.raises(QueryError, match="yesterday-ish"):
        list(log.iter(since="yesterday-ish"))


def test_iter_opens_only_days_in_range(root: Path) -> None:
    """A time-bounded iter reads only the day files in range (others may even be unreadable)."""
    clock = Clock(MIDNIGHT_US - 2)
    with DecisionLog(str(root), sync="never", clock=clock) as log:
        for i in range(4):
            log.record("a", True, {}, {"i": i})
        (root / "2026-11-25.jsonl").write_bytes(b"garbage\n")  # would raise if read
        got = [d.seq for d in log.iter(since="2026-11-26T00:00:00Z")]
    assert got == [1, 2, 3]  # the clock ticks before it answers: one record before midnight


def test_idempotent_caller_ids(log: DecisionLog, root: Path) -> None:
    """Re-recording a caller id returns the stored record; other content is refused."""
    first = log.record("rollback", True, VOTES, SUBJECT, "r", id="deploy-7:rollback")
    again = log.record("rollback", True, VOTES, SUBJECT, "r", id="deploy-7:rollback")
    assert again == first
    with pytest.raises(ConflictError) as info:
        log.record("rollback", False, VOTES, SUBJECT, "r", id="deploy-7:rollback")
    assert info.value.stored == first
    assert len(all_lines(root)) == 1
    assert log.record("next", True, {}, {}).seq == 1


def test_threads_record_concurrently(root: Path) -> None:
    """8 threads recording at once: every record whole, seqs contiguous, each thread in order."""
    with DecisionLog(str(root), sync="batch") as log:

        def work(t: int) -> None:
            for i in range(200):
                log.record("t", True, {}, {"t": t, "i": i})

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        decisions = list(log.read())
    assert [d.seq for d in decisions] == list(range(1600))
    for t in range(8):
        assert [d.subject["i"] for d in decisions if d.subject["t"] == t] == list(range(200))


def test_concurrent_retries_of_one_id(root: Path) -> None:
    """Many threads retrying the same caller id at once store it exactly once."""
    with DecisionLog(str(root), sync="batch") as log:
        results = []

        def work() -> None:
            results.append(log.record("halt", True, {}, {"x": 1}, id="only-once"))

        threads = [threading.Thread(target=work) for _ in range(16)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert len(log) == 1
    assert {r.seq for r in results} == {0} and len(results) == 16


def test_follow_in_process_across_midnight(root: Path) -> None:
    """follow() yields records written after it starts, in order, across a day boundary."""
    clock = Clock(MIDNIGHT_US - 3)
    with DecisionLog(str(root), sync="never", clock=clock) as log:
        log.record("before-follow", True, {}, {})
        got: list[int] = []
        done = threading.Event()

        def reader() -> None:
            for d in log.follow(after_seq=0, stop=done.is_set):
                got.append(d.seq)
                if len(got) == 5:
                    done.set()

        started = threading.Thread(target=reader)
        started.start()
        for i in range(5):
            log.record("a", True, {}, {"i": i})
        started.join(timeout=10)
    assert got == [1, 2, 3, 4, 5]


def test_follow_from_seq_replays_then_waits(log: DecisionLog) -> None:
    """follow(after_seq=n) first replays what follows n, then returns when stopped."""
    for i in range(5):
        log.record("a", True, {}, {"i": i})
    seen: list[int] = []
    for d in log.follow(after_seq=1, stop=lambda: len(seen) >= 3):
        seen.append(d.seq)
    assert seen == [2, 3, 4]
    assert [d.seq for d in log.follow(after_seq=-1, stop=lambda: True)] == [0, 1, 2, 3, 4]


def test_relative_root_only_when_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The root is the argument, else $REASONING_TRACE_DIR, else platformdirs; never the cwd."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REASONING_TRACE_DIR", str(tmp_path / "env"))
    with DecisionLog(sync="never") as log:
        assert log.root == tmp_path / "env"
    monkeypatch.delenv("REASONING_TRACE_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    with DecisionLog(sync="never") as log:
        assert log.root.is_absolute() and str(log.root).startswith(str(tmp_path / "xdg"))
    with DecisionLog("rel", sync="never") as log:
        assert log.root == tmp_path / "rel"


def test_sync_from_environment(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$REASONING_TRACE_SYNC picks the durability mode; an unknown one is refused."""
    monkeypatch.setenv("REASONING_TRACE_SYNC", "always")
    with DecisionLog(str(root)) as log:
        assert log.sync == "always"
        log.record("a", True, {}, {})
    monkeypatch.setenv("REASONING_TRACE_SYNC", "sometimes")
    with pytest.raises(ValueError, match="sometimes"):
        DecisionLog(str(root))


def test_closed_log_refuses(root: Path) -> None:
    """Recording into a closed log raises instead of silently doing nothing."""
    log = DecisionLog(str(root), sync="never")
    log.close()
    from reasoning_trace import StorageError

    with pytest.raises(StorageError, match="closed"):
        log.record("a", True, {}, {})


def test_follow_starts_when_called_not_when_iterated(log: DecisionLog) -> None:
    """follow() fixes "from now on" at the call: records made before the first next() count."""
    log.record("old", True, {}, {})
    stream = log.follow(stop=lambda: False)
    log.record("new", True, {}, {})
    assert next(stream).action == "new"


def test_approximate_stats_agree_with_the_records_on_an_honest_log(root: Path) -> None:
    """The index's aggregates (for gauges) equal the counts from the records themselves."""
    with DecisionLog(str(root), sync="never") as log:
        for i in range(40):
            log.record(["a", "b", "c"][i % 3], i % 4 != 0, {"s": {"passed": i % 5 != 0}}, {"i": i})
        assert log.stats(approximate=True) == log.stats()


class CountingStore(FileStore):
    """A file store that counts the appends (commits) it is asked for."""

    appends = 0

    def append(self, batch: Sequence[Pending], *, keep_lock: bool = False) -> list[AppendResult]:
        """Count, then append as the file store does."""
        self.appends += 1
        return super().append(batch, keep_lock=keep_lock)


@pytest.mark.parametrize("sync", ["batch", "never"])
def test_record_many_stores_the_valid_ones_in_one_append(root: Path, sync: str) -> None:
    """record_many validates each decision as record does, stores the valid ones in order in
    one append, and returns each refusal in its place; refusals use no seq."""
    store = CountingStore(root, sync=sync)  # type: ignore[arg-type]
    with DecisionLog(str(root), sync=sync, store=store) as log:
        log.record("first", True, {}, {}, id="taken")
        results = log.record_many(
            [
                {"action": "a", "approved": True, "votes": VOTES, "subject": SUBJECT},
                {"action": "", "approved": True},
                {"action": "b", "approved": False, "reason": "no", "id": "mine"},
                {"action": "c"},
                {"action": "d", "approved": True, "colour": "red"},
                {"action": "first", "approved": False, "id": "taken"},
                {"action": "first", "approved": True, "id": "taken"},
                {"action": "b", "approved": False, "reason": "no", "id": "mine"},
                "not a mapping",  # type: ignore[list-item]
            ]
        )
        assert store.appends == 2
        kinds = [type(r).__name__ for r in results]
        assert kinds == [
            "Decision",
            "RecordError",
            "Decision",
            "RecordError",
            "RecordError",
            "ConflictError",
            "Decision",
            "Decision",
            "RecordError",
        ]
        a, _, b, c, d, _, same, retry, _ = results
        assert isinstance(a, Decision) and isinstance(b, Decision)
        assert (a.seq, b.seq) == (1, 2) and a.votes == VOTES and b.reason == "no"
        assert isinstance(c, RecordError) and c.path == "approved"
        assert isinstance(d, RecordError) and d.path == "colour"
        assert isinstance(same, Decision) and same.seq == 0
        assert retry == b
        assert len(log) == 3
        assert log.record("next", True, {}, {}).seq == 3


def test_record_many_with_nothing_valid_writes_nothing(root: Path) -> None:
    """A batch of refused decisions appends nothing at all."""
    store = CountingStore(root)
    with DecisionLog(str(root), store=store) as log:
        results = log.record_many([{"action": "x", "approved": "yes"}, {}])
        assert [type(r) for r in results] == [RecordError, RecordError]
        assert store.appends == 0 and len(log) == 0


def test_record_many_beside_other_writers_stays_together(root: Path) -> None:
    """Batches recorded while other threads record one at a time each land whole, with
    consecutive seqs, and nothing is lost or stored twice."""
    with DecisionLog(str(root), sync="batch") as log:
        batches: list[list[int]] = []

        def singles(t: int) -> None:
            for i in range(100):
                log.record("one", True, {}, {"t": t, "i": i})

        def many(t: int) -> None:
            for i in range(10):
                group = [
                    {"action": "many", "approved": True, "subject": {"t": t, "i": i, "j": j}}
                    for j in range(25)
                ]
                results = log.record_many(group)
                batches.append([r.seq for r in results])  # type: ignore[union-attr]

        threads = [threading.Thread(target=singles, args=(t,)) for t in range(4)]
        threads += [threading.Thread(target=many, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        decisions = list(log.read())
    assert [d.seq for d in decisions] == list(range(400 + 1000))
    assert len(batches) == 40
    for seqs in batches:
        assert seqs == list(range(seqs[0], seqs[0] + 25))


def test_record_many_on_a_closed_log_raises(root: Path) -> None:
    """A closed log refuses a batch as it refuses one record."""
    from reasoning_trace import StorageError

    log = DecisionLog(str(root), sync="never")
    log.close()
    with pytest.raises(StorageError, match="closed"):
        log.record_many([{"action": "a", "approved": True}])
