"""The derived index of a file store (``index.py``, ``index_sql.py``): rebuilt when deleted, never
believed when a row points at the wrong place, a write it saw was rolled back or a day file was
edited; caller-id lookups read only the indexed place; a reader's index lives in the per-user
cache and reading changes nothing under the root; readers in two processes at once."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from reasoning_trace import CorruptLine, DecisionLog, Filter, NotFound
from reasoning_trace.record import Decision, format_utc, prepare

from .conftest import all_lines
from .test_cli_integrity import rtrace
from .test_processes import start_writer

NOON_US = 1795608000 * 1_000_000  # 2026-11-25T12:00:00Z


class Clock:
    """A clock set by hand, in microseconds (the store reads nanoseconds)."""

    def __init__(self, micros: int) -> None:
        self.micros = micros

    def __call__(self) -> int:
        return self.micros * 1000


def gates(log: DecisionLog, numbers: range) -> list[Decision]:
    """Record decisions of two actions, with vetoes and caller ids, numbered ``numbers``."""
    return [
        log.record(
            "halt" if i % 3 == 0 else "upgrade",
            i % 4 != 0,
            {"safety": {"passed": i % 4 != 0}, "cost": {"passed": True}},
            {"agent_id": f"a{i % 2}", "i": i},
            id=f"deploy-{i}",
        )
        for i in numbers
    ]


def make_log(root: Path, n: int = 30, clock: Clock | None = None) -> list[Decision]:
    """A log of ``n`` gate decisions, closed (and signed)."""
    with DecisionLog(str(root), sync="never", clock=clock) as log:
        return gates(log, range(n))


def answers(log: DecisionLog) -> dict[str, object]:
    """What a user asks of the index, as plain data: lookups, filtered and paged queries, the
    index's aggregates."""
    flts = {
        "halt": Filter.build(action="halt"),
        "rejected": Filter.build(approved=False),
        "vetoed": Filter.build(voter="safety"),
        "agent": Filter.build(subject={"agent_id": "a1"}),
        "number": Filter.build(subject={"i": 7}),
    }
    out: dict[str, object] = {name: [d.line for d in log.query(flt)] for name, flt in flts.items()}
    out["page"] = [d.line for d in log.query(flts["halt"], newest_first=True, limit=3)]
    out["cursor"] = [d.seq for d in log.query(Filter(), newest_first=True, before_seq=10)]
    out["lines"] = log.query_lines(flts["rejected"])
    out["by_id"] = [log.get(f"deploy-{i}").line for i in (0, 13, 29)]
    out["by_seq"] = [log.get(i).line for i in (0, 13, 29)]
    out["from_12"] = [d.seq for d in log.read(12, 15)]
    out["stats"] = log.stats(approximate=True)
    return out


def expected_answers(root: Path) -> dict[str, object]:
    """The same answers, computed from the day files' bytes alone."""
    lines = all_lines(root)
    recs = [orjson.loads(line) for line in lines]

    def pick(keep) -> list[bytes]:  # type: ignore[no-untyped-def]
        return [line for line, r in zip(lines, recs, strict=True) if keep(r)]

    halts = pick(lambda r: r["action"] == "halt")
    return {
        "halt": halts,
        "rejected": pick(lambda r: not r["approved"]),
        "vetoed": pick(lambda r: r["votes"].get("safety", {}).get("passed") is False),
        "agent": pick(lambda r: r["subject"].get("agent_id") == "a1"),
        "number": pick(lambda r: r["subject"].get("i") == 7),
        "page": halts[::-1][:3],
        "cursor": list(range(9, -1, -1)),
        "lines": pick(lambda r: not r["approved"]),
        "by_id": pick(lambda r: r["id"] in ("deploy-0", "deploy-13", "deploy-29")),
        "by_seq": [lines[0], lines[13], lines[29]],
        "from_12": [12, 13, 14],
    }


def check_answers(log: DecisionLog, root: Path) -> dict[str, object]:
    """Assert the log's answers are the ones the day files give; return them."""
    got = answers(log)
    want = expected_answers(root)
    for key, value in want.items():
        assert got[key] == value, key
    stats = got["stats"]
    lines = [orjson.loads(line) for line in all_lines(root)]
    assert {(a.action, a.total, a.approved) for a in stats.actions} == {  # type: ignore[attr-defined]
        (
            name,
            sum(r["action"] == name for r in lines),
            sum(r["action"] == name and r["approved"] for r in lines),
        )
        for name in {r["action"] for r in lines}
    }
    return got


def index_files(root: Path) -> list[Path]:
    """The writer's index files under the root."""
    return sorted((root / ".rtrace").glob("index.sqlite*"))


def reader_indexes(cache: Path) -> list[Path]:
    """The index databases readers keep in the per-user cache ``cache``."""
    return sorted(cache.rglob("index.sqlite"))


def edit_index(path: Path, sql: str, *args: object) -> None:
    """Change the index database behind the store's back, as another program could."""
    db = sqlite3.connect(path)
    try:
        with db:
            db.execute(sql, args)
    finally:
        db.close()


def snapshot(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Everything under the root, derived files included: bytes and mtime of each file, the
    mtime of each directory (it changes with its entries)."""
    out: dict[str, tuple[bytes | None, int]] = {".": (None, root.stat().st_mtime_ns)}
    for path in sorted(root.rglob("*")):
        data = path.read_bytes() if path.is_file() else None
        out[str(path.relative_to(root))] = (data, path.stat().st_mtime_ns)
    return out


# --- derived: deleted, it is rebuilt --------------------------------------------------------


@pytest.mark.parametrize("kind", ["writer", "reader"])
def test_a_deleted_index_is_rebuilt_and_answers_the_same(root: Path, kind: str) -> None:
    """Deleting a writer's index (under ``.rtrace/``) or a reader's (in the per-user cache)
    loses nothing: the next log of that kind rebuilds it from the day files and answers
    exactly as before."""
    make_log(root)
    cache = Path(os.environ["XDG_CACHE_HOME"])

    def opened() -> DecisionLog:
        log = DecisionLog(str(root), sync="never")
        if kind == "writer":
            log.checkpoint()  # signing makes it the log's writer: its index is the root's
        return log

    def index() -> list[Path]:
        return index_files(root) if kind == "writer" else sorted(cache.rglob("index.sqlite*"))

    with opened() as log:
        before = check_answers(log, root)
    assert index()
    for path in index():
        path.unlink()
    with opened() as log:
        assert answers(log) == before
    assert index()


# --- never believed: rows that point elsewhere ------------------------------------------------


@pytest.fixture(params=["writer", "reader"])
def indexed(request: pytest.FixtureRequest, root: Path) -> tuple[DecisionLog, Path]:
    """A log of 30 records open as its writer (its index under ``.rtrace/``) or as a reader
    (its index in the per-user cache), the index caught up; and the index's database."""
    make_log(root, 29)
    log = DecisionLog(str(root), sync="never")
    request.addfinalizer(log.close)
    if request.param == "writer":
        gates(log, range(29, 30))
    else:
        with DecisionLog(str(root), sync="never") as writer:
            gates(writer, range(29, 30))
    check_answers(log, root)
    if request.param == "writer":
        return log, root / ".rtrace" / "index.sqlite"
    [path] = reader_indexes(Path(os.environ["XDG_CACHE_HOME"]))
    return log, path


def index_rows(path: Path) -> list[tuple[int, str]]:
    """(seq, id) of every row of an index database."""
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT seq, id FROM records ORDER BY seq").fetchall()
    finally:
        db.close()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE records SET offset = (SELECT offset FROM records WHERE seq = 6) WHERE seq = 5",
        "UPDATE records SET offset = offset + 7 WHERE seq = 5",
        "UPDATE records SET length = length - 1 WHERE seq = 5",
        "UPDATE records SET offset = offset + 1, length = length - 1 WHERE seq = 5",
        "UPDATE records SET day = '2026-11-24' WHERE seq = 5",
        "UPDATE records SET day = '../../etc/passwd' WHERE seq = 5",
        "UPDATE records SET offset = 10 * 1000 * 1000 WHERE seq = 5",
    ],
    ids=[
        "another-records-line",
        "mid-line",
        "short",
        "inside-the-line",
        "no-such-day",
        "outside-the-root",
        "past-the-end",
    ],
)
def test_a_row_pointing_at_the_wrong_place_is_detected_and_rebuilt(
    indexed: tuple[DecisionLog, Path], root: Path, sql: str
) -> None:
    """An index whose row for seq 5 lies about where it is never makes the log return bytes
    other than those at the place the seq says, by seq, by id or in a query; the index is
    rebuilt."""
    log, path = indexed
    edit_index(path, sql)
    lines = all_lines(root)
    assert log.get(5).line == lines[5]
    assert log.get("deploy-5").line == lines[5]
    assert [d.line for d in log.read(5, 7)] == lines[5:7]
    check_answers(log, root)
    assert index_rows(path) == [(i, f"deploy-{i}") for i in range(30)]


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM records WHERE seq = 5",
        "INSERT INTO records SELECT 99, 'ghost', day, offset, length, ts, action, approved, "
        "node FROM records WHERE seq = 6",
    ],
    ids=["row-deleted", "row-added"],
)
def test_rows_added_or_lost_behind_its_back_are_detected_by_queries(
    indexed: tuple[DecisionLog, Path], root: Path, sql: str
) -> None:
    """An index holding more or fewer rows than the log has records answers queries exactly
    as the day files do (it is rebuilt), and finds no record that is not there."""
    log, path = indexed
    edit_index(path, sql)
    check_answers(log, root)
    with pytest.raises(NotFound):
        log.get("ghost")
    with pytest.raises(NotFound):
        log.get(99)
    assert index_rows(path) == [(i, f"deploy-{i}") for i in range(30)]


@pytest.mark.parametrize(
    "statements",
    [
        [
            "DELETE FROM records WHERE seq = 5",
            "DELETE FROM vetoes WHERE seq = 5",
            "DELETE FROM subjects WHERE seq = 5",
            "UPDATE meta SET v = v - 1 WHERE k = 'next_seq'",
        ],
        [
            "DELETE FROM records WHERE seq = 5",
            "INSERT INTO records SELECT 99, 'ghost', day, offset, length, ts, 'ghost', approved, "
            "node FROM records WHERE seq = 6",
        ],
    ],
    ids=["row-and-count-lowered", "row-swapped-for-one-past-the-end"],
)
def test_rows_and_counters_edited_together_are_detected(
    indexed: tuple[DecisionLog, Path], root: Path, statements: list[str]
) -> None:
    """A row removed with the index's own count lowered to match, or swapped for a row of a
    seq the log does not hold, never hides a record from queries: the index is rebuilt."""
    log, path = indexed
    for sql in statements:
        edit_index(path, sql)
    check_answers(log, root)
    assert index_rows(path) == [(i, f"deploy-{i}") for i in range(30)]


# --- never believed: the day files changed under it -----------------------------------------


@pytest.mark.parametrize(
    ("ghost_reason", "new_reason"),
    [("", ""), ("rolled back", ""), ("", "a longer reason")],
    ids=["as-long", "shorter", "longer"],
)
def test_a_rolled_back_write_it_had_seen(root: Path, ghost_reason: str, new_reason: str) -> None:
    """A reader's index saw a batch that was then rolled back (cut from the day file, as a
    failed write is), and the next batch took the same seqs: the reader answers with the
    records now stored, never the rolled-back ones, whether the new bytes are as long as the
    old, shorter or longer."""
    clock = Clock(NOON_US)
    made = make_log(root, 10, clock)
    day = root / f"{made[0].day}.jsonl"
    cut = day.stat().st_size
    # The batch as a writer lays it down: composed for seqs 10..12, at the next instants.
    ghosts = [
        prepare("ghost", True, {}, {"i": i}, ghost_reason).compose(
            10 + i, clock.micros + 1 + i, format_utc(clock.micros + 1 + i)
        )
        for i in range(3)
    ]
    with open(day, "ab") as fh:
        fh.write(b"".join(line + b"\n" for line in ghosts))
    seen = day.stat().st_size
    with DecisionLog(str(root)) as reader:
        assert [d.seq for d in reader.query(Filter.build(action="ghost"))] == [10, 11, 12]
        os.truncate(day, cut)  # the rollback
        with DecisionLog(str(root), sync="never", clock=clock) as writer:
            new = []
            for i in range(3):
                clock.micros += 1
                new.append(writer.record("stays", True, {}, {"i": i}, new_reason))
        assert [d.seq for d in new] == [10, 11, 12]
        grown = day.stat().st_size - seen
        assert (grown > 0, grown < 0) == (
            len(new_reason) > len(ghost_reason),
            len(new_reason) < len(ghost_reason),
        )
        assert [d.seq for d in reader.query(Filter.build(action="stays"))] == [10, 11, 12]
        assert reader.query(Filter.build(action="ghost")) == []
        assert reader.get(new[1].id).line == new[1].line
        assert reader.get(11).line == new[1].line
        assert [d.line for d in reader.read(11)] == [new[1].line, new[2].line]
        stats = reader.stats(approximate=True)
        assert {a.action for a in stats.actions} == {"halt", "upgrade", "stays"}
        for line in ghosts:
            with pytest.raises(NotFound):
                reader.get(orjson.loads(line)["id"])


def test_an_edited_day_file_is_never_read_through_stale_rows(root: Path) -> None:
    """A record edited by hand in the middle of a day file (its line grows): every answer is
    the bytes the day file holds at each seq's place, the edited record included."""
    make_log(root)
    with DecisionLog(str(root)) as log:
        check_answers(log, root)
    day = sorted(root.glob("*.jsonl"))[0]
    lines = day.read_bytes().splitlines(keepends=True)
    lines[8] = lines[8].replace(b'"reason":""', b'"reason":"edited by hand"')
    day.write_bytes(b"".join(lines))
    with DecisionLog(str(root)) as log:
        check_answers(log, root)
        assert log.get(8).reason == "edited by hand"
        assert [d.seq for d in log.read(7, 10)] == [7, 8, 9]


# --- lookups by caller id read one place ------------------------------------------------------


def test_caller_id_lookups_read_only_the_indexed_place(root: Path) -> None:
    """With the index current, a damaged line elsewhere in the day file does not stop a
    caller-id lookup, an idempotent retry, a new caller id or a lookup that finds nothing:
    none of them reads the log beyond the indexed place (a scan would stop at the damage)."""
    made = make_log(root)
    with DecisionLog(str(root)) as log:
        assert log.get("deploy-29") == made[29]
    day = sorted(root.glob("*.jsonl"))[0]
    data = bytearray(day.read_bytes())
    start = data.index(made[3].line)
    data[start : start + len(made[3].line)] = b"#" * len(made[3].line)  # not JSON at all
    day.write_bytes(bytes(data))
    with DecisionLog(str(root), sync="never") as log:
        with pytest.raises(CorruptLine):
            list(log.iter())  # a scan meets the damage
        assert log.get("deploy-20").line == made[20].line
        retry = log.record(
            "upgrade",
            True,
            {"safety": {"passed": True}, "cost": {"passed": True}},
            {"agent_id": "a1", "i": 29},
            id="deploy-29",
        )
        assert retry == made[29]
        assert log.record("new", True, {}, {}, id="deploy-new").seq == 30
        assert log.get("deploy-new").seq == 30
        with pytest.raises(NotFound):
            log.get("deploy-missing")


# --- a reader writes nothing under the root ---------------------------------------------------


def test_a_readers_index_is_in_the_user_cache_and_reading_changes_nothing(
    root: Path,
) -> None:
    """A reader (library and CLI) keeps its index in the per-user cache: after queries,
    lookups, pages, stats and proofs, the root holds the same files with the same bytes and
    times, and no derived directory appeared under it."""
    make_log(root)
    shutil.rmtree(root / ".rtrace")  # derived: a reader must not re-create it
    before = snapshot(root)
    cache = Path(os.environ["XDG_CACHE_HOME"])
    with DecisionLog(str(root)) as reader:
        check_answers(reader, root)
        reader.prove(5)
        list(reader.iter(since="2026-01-01"))
        reader.recent(5)
    for args in (
        ("query", "--action", "halt", "--format", "json"),
        ("show", "deploy-3"),
        ("stats",),
    ):
        done = rtrace(root, *args)
        assert done.returncode == 0, done.stderr
    halts = [
        json.loads(x)["seq"]
        for x in rtrace(root, "query", "--action", "halt", "--format", "json").stdout.split("\n")
        if x
    ]
    assert halts == list(range(0, 30, 3))
    assert snapshot(root) == before
    assert not (root / ".rtrace").exists()
    found = reader_indexes(cache)
    assert found and all(not p.is_relative_to(root) for p in found)


# --- two reader processes at once --------------------------------------------------------------


READER = textwrap.dedent(
    """
    import sys, time
    from reasoning_trace import DecisionLog, Filter
    root, total = sys.argv[1], int(sys.argv[2])
    deadline = time.monotonic() + 120
    rounds = 0
    with DecisionLog(root) as log:
        while True:
            lines = log.query_lines(Filter.build(action="w"))
            seqs = [log.get(i).seq for i in range(0, len(lines), 37)]
            assert seqs == list(range(0, len(lines), 37)), seqs
            import orjson
            got = [orjson.loads(line)["seq"] for line in lines]
            assert got == list(range(1, len(lines) + 1)), got[:5]
            for seq in range(1, len(lines) + 1, 53):
                assert log.get(seq).line == lines[seq - 1]
            rounds += 1
            if len(lines) == total:
                break
            assert time.monotonic() < deadline, f"saw {len(lines)} of {total}"
    print(rounds)
    """
)


def test_two_reader_processes_share_an_index_while_a_writer_writes(root: Path) -> None:
    """Two reader processes query and look up records while another process writes: every
    answer each gives is a consistent prefix of the log (seqs contiguous, lookups equal to
    the query's lines), and both end with every record."""
    with DecisionLog(str(root)) as log:
        log.record("start", True, {}, {})
    writer = start_writer(root, "w", 300, 2, "batch")
    env = dict(os.environ)
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(root), "600"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    _, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    for proc in readers:
        out, err = proc.communicate(timeout=150)
        assert proc.returncode == 0, err
        assert int(out) >= 1
    with DecisionLog(str(root)) as log:
        assert [d.line for d in log.query(Filter.build(action="w"))] == all_lines(root)[1:]
