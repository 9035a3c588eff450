"""The leaf pass folds the tree a level at a time while later chunks are still being hashed in
worker processes: over day files of odd sizes, cut into chunks at odd places, it gives every
root that a one-leaf-at-a-time fold gives, and verify reports exactly what one process reports.
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest

import reasoning_trace.leaf_pass as leaf_pass
from reasoning_trace import DecisionLog
from reasoning_trace.layout import Layout
from reasoning_trace.leaf_pass import hash_pass
from reasoning_trace.legacy import Prefix
from reasoning_trace.report import Report
from reasoning_trace.tree import CompactRange, extend_range, leaf_hash
from reasoning_trace.verify import verify

DAY_US = 86_400_000_000
START_US = 1795478400 * 1_000_000 - 40 * DAY_US  # 2026-10-15T00:00:00Z
SIZES = (1, 2, 3, 7, 33) * 3  # records in each day file, in order: 15 files


class Clock:
    """Each record on the day the ``SIZES`` pattern puts it, an hour apart within a day."""

    def __init__(self) -> None:
        self.times = [
            (START_US + day * DAY_US + (i + 1) * 600_000_000) * 1000
            for day, count in enumerate(SIZES)
            for i in range(count)
        ]
        self.n = 0

    def __call__(self) -> int:
        t = self.times[min(self.n, len(self.times) - 1)]
        self.n += 1
        return t


@pytest.fixture(scope="module")
def odd_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A log of 138 records over 15 day files of 1, 2, 3, 7 and 33 records, checkpointed every
    5 records (so signed sizes fall inside files and inside chunks); and its verifier key."""
    base = tmp_path_factory.mktemp("odd")
    root = base / "log"
    with DecisionLog(
        str(root),
        sync="never",
        clock=Clock(),
        key=str(base / "signing.key"),
        origin="example/odd",
        checkpoint_every=5,
        checkpoint_seconds=0,
    ) as log:
        for i in range(sum(SIZES)):
            log.record(
                "deploy",
                i % 4 != 0,
                {"safety": {"passed": i % 4 != 0, "reason": f"check {i}"}},
                {"agent_id": f"a{i % 3}", "i": i},
                f"reason {i}" * (i % 5),  # lines of many lengths
            )
    vkey = (root / "checkpoints" / "vkey").read_text().strip()
    return root, vkey


def day_files(root: Path) -> list[Path]:
    """The log's day files, in order."""
    layout = Layout(root)
    return [layout.day_file(day) for day in layout.days()]


def test_the_log_has_the_odd_file_sizes(odd_log: tuple[Path, str]) -> None:
    """The fixture is what the other tests rely on: files of 1, 2, 3, 7 and 33 records."""
    counts = [len(p.read_bytes().splitlines()) for p in day_files(odd_log[0])]
    assert counts == list(SIZES)


@pytest.mark.parametrize(("workers", "chunk"), [(1, 1 << 24), (1, 251), (2, 1 << 24), (2, 997)])
def test_every_root_matches_a_fold_one_leaf_at_a_time(
    odd_log: tuple[Path, str], workers: int, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At every size from 1 to the last record, the pass's root is the root of the leaves
    folded one by one (RFC 9162), in one process or with workers, whole files or small chunks;
    so are where it could carry on from (the tree's edge) and where each size's leaf starts."""
    days = day_files(odd_log[0])
    lines = [line for p in days for line in p.read_bytes().splitlines()]
    reference = CompactRange()
    roots, edges = {}, {}
    for n, line in enumerate(lines, 1):
        reference.append(leaf_hash(line))
        roots[n], edges[n] = reference.root(), tuple(reference.hashes)
    monkeypatch.setattr(leaf_pass, "CHUNK_BYTES", chunk)
    report = Report(str(odd_log[0]))
    got = hash_pass(days, range(1, len(lines) + 1), Prefix(), report, workers=workers)
    assert got.records == len(lines) and got.roots == roots
    assert got.resume_at is not None and got.resume_at.edge == edges[len(lines)]
    assert got.resume_at.root() == roots[len(lines)]
    file_of = [d for d, count in enumerate(SIZES) for _ in range(count)]
    for n in range(1, len(lines)):  # the leaf after size n starts where the pass says
        d, offset = got.places[n]
        if d == file_of[n]:
            assert days[d].read_bytes()[offset:].splitlines()[0] == lines[n]
        else:  # size n ends a file: its place is that file's end
            assert (d, offset) == (file_of[n - 1], days[d].stat().st_size)
    assert not report.findings


def test_extend_range_equals_appending_one_by_one() -> None:
    """Leaves appended in runs of any length after a range of any size, with the range asked
    for at sizes inside the run, give the compact ranges of appending them one by one."""
    for before in (0, 1, 2, 3, 5, 8, 13, 64, 100):
        for run in (0, 1, 2, 3, 7, 33, 64, 65):
            leaves = [hashlib.sha256(b"%d" % i).digest() for i in range(before + run)]
            start = CompactRange()
            for h in leaves[:before]:
                start.append(h)
            asked = (before + 1, before + run // 2, before + run)
            sizes = sorted({s for s in asked if before < s <= before + run})
            hashes = list(start.hashes)
            got = extend_range(hashes, before, b"".join(leaves[before:]), sizes)
            one = CompactRange(start.size, start.hashes)
            want = []
            for h in leaves[before:]:
                one.append(h)
                if one.size in sizes:
                    want.append(list(one.hashes))
            assert (hashes, got) == (one.hashes, want), (before, run)


def test_workers_and_small_chunks_report_what_one_process_reports(
    odd_log: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify with worker processes and chunks cut inside files gives the same report as one
    process reading whole files: every checkpoint matched, nothing else found."""
    root, vkey = odd_log
    alone = verify(root, vkey, workers=1)
    monkeypatch.setattr(leaf_pass, "CHUNK_BYTES", 997)
    assert verify(root, vkey, workers=2) == alone
    assert alone.ok and alone.records == sum(SIZES) and alone.signed_size == sum(SIZES)
    assert alone.checkpoints >= sum(SIZES) // 5


def test_a_tampered_line_in_a_middle_file_is_found_at_its_line(
    odd_log: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One byte changed in line 17 of the tenth day file (33 records, between others) is
    found there, with workers and small chunks as in one process."""
    root = tmp_path / "log"
    shutil.copytree(odd_log[0], root)
    middle = day_files(root)[9]
    raw = middle.read_bytes().splitlines(keepends=True)
    assert len(raw) == 33
    raw[16] = raw[16].replace(b"check", b"chec!", 1)
    middle.write_bytes(b"".join(raw))
    alone = verify(root, odd_log[1], workers=1)
    monkeypatch.setattr(leaf_pass, "CHUNK_BYTES", 997)
    parallel = verify(root, odd_log[1], workers=2)
    assert parallel.findings == alone.findings and not parallel.ok
    seq = sum(SIZES[:9]) + 16
    altered = [(f.file, f.line, f.seq_from) for f in parallel.findings if f.kind == "altered"]
    assert altered == [(str(middle), 17, seq)]


def redate(path: Path, index: int, days: int) -> None:
    """Move the date of line ``index`` (0-based) of a day file by ``days`` days."""
    lines = path.read_bytes().splitlines(keepends=True)
    when = (date.fromisoformat(path.stem) + timedelta(days=days)).isoformat()
    stamp = f'"datetime_utc":"{path.stem}T'.encode()
    lines[index] = lines[index].replace(stamp, f'"datetime_utc":"{when}T'.encode())
    path.write_bytes(b"".join(lines))


def test_time_notes_are_the_same_with_workers_and_small_chunks(
    odd_log: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records dated another day than their file's (in the middle, first or last of a file),
    two records swapped and a record whose time field is renamed give the same notes, at the
    same lines, with workers and small chunks as in one process: where a reader puts them."""
    root = tmp_path / "log"
    shutil.copytree(odd_log[0], root)
    days = day_files(root)
    redate(days[4], 9, -1)  # 33 records: line 10 of the day before, so also before line 9
    lines = days[4].read_bytes().splitlines(keepends=True)
    lines[19], lines[20] = lines[20], lines[19]
    lines[29] = lines[29].replace(b'"datetime_utc"', b'"datetime_utx"')
    days[4].write_bytes(b"".join(lines))
    redate(days[6], 0, -1)  # 2 records: the first of the day before, after the file before's
    redate(days[9], 32, 1)  # 33 records: the last of the next day, after the next file's
    alone = verify(root, odd_log[1], workers=1)
    monkeypatch.setattr(leaf_pass, "CHUNK_BYTES", 997)
    parallel = verify(root, odd_log[1], workers=2)
    assert parallel.findings == alone.findings
    notes = {
        (f.kind, days.index(Path(f.file or "")), f.line)
        for f in parallel.findings
        if f.kind in ("wrong_day", "clock_backwards")
    }
    assert notes == {
        ("wrong_day", 4, 10),
        ("clock_backwards", 4, 10),
        ("clock_backwards", 4, 21),
        ("wrong_day", 6, 1),
        ("wrong_day", 9, 33),
        ("clock_backwards", 10, 1),
    }
