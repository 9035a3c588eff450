"""Upgrade in place: directories the original module wrote keep recording, show their history,
verify and lose no line; the original and the new writer side by side; adopt and doctor."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest

import reasoning_trace
from reasoning_trace import DecisionLog, counters, read_recent, record_decision
from reasoning_trace.checkpoint import Checkpoints
from reasoning_trace.doctor import diagnose
from reasoning_trace.verify import verify

from .conftest import HERE, snapshot
from .seed_writer import seed_record
from .terminal import on_a_terminal
from .test_cli_integrity import rtrace
from .test_processes import start_writer

SEED = str(HERE / "seed_writer.py")
EPOCH = datetime(1970, 1, 1)


@pytest.fixture(autouse=True)
def close_shared_logs() -> Iterator[None]:
    """The original API keeps one log per root open; close them after each test."""
    yield
    reasoning_trace.compat._close_all()


def write_original(root: Path, count: int, start: datetime, step: timedelta) -> None:
    """``count`` decisions written by the original algorithm at fixed instants from ``start``;
    its two clock reads are 5 ms apart, so one that straddles midnight is stamped with the day
    before its file's."""
    for i in range(count):
        t = start + step * i
        first = t - timedelta(milliseconds=5)
        seed_record(
            str(root),
            "upgrade_proposal" if i % 3 else "rollback",
            i % 3 != 0,
            {"safety": {"passed": i % 3 != 0, "reason": "checked"}, "cost": {"passed": True}},
            {"agent_id": f"agent-{i % 4}", "i": i},
            f"reason {i}",
            clock=lambda first=first: (first - EPOCH).total_seconds(),
            now=iter([first, t]).__next__,
        )


def lines_of(root: Path) -> list[bytes]:
    """Every complete line of every day file, in file order."""
    out: list[bytes] = []
    for path in sorted(root.glob("*.jsonl")):
        out.extend(path.read_bytes().splitlines())
    return out


@pytest.fixture
def original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory with 30 decisions of the original module over two days, the original API
    pointed at it by a patched ``_resolve_trace_dir``."""
    root = tmp_path / "reasoning_traces"
    write_original(root, 30, datetime(2026, 5, 11, 23, 59, 45), timedelta(seconds=1))
    monkeypatch.setattr(reasoning_trace, "_resolve_trace_dir", lambda: str(root))
    return root


def test_an_original_directory_upgraded_in_place_keeps_recording(original: Path) -> None:
    """The issue's case: read_recent shows the original's history, record_decision returns
    True, the new record continues the seq after it, the CLI shows everything, verify passes,
    and the original's bytes are unchanged."""
    before = {p.name: p.read_bytes() for p in original.glob("*.jsonl")}
    history = read_recent(1000)
    assert [r["seq"] for r in history] == list(range(30))
    assert history[7]["subject"] == {"agent_id": "agent-3", "i": 7}
    assert history[7]["v"] == 0 and history[7]["id"].startswith("legacy-7-")
    assert record_decision("halt", False, {"safety": {"passed": False}}, {"agent_id": "a"}, "new")
    reasoning_trace.compat._close_all()
    after = read_recent(1000)
    assert [r["seq"] for r in after] == list(range(31))
    assert after[-1]["action"] == "halt" and after[-1]["v"] == 1
    for name, data in before.items():
        assert (original / name).read_bytes().startswith(data)
    # The adoption signed the original's 30 records before anything else.
    sizes = [e.size for e in Checkpoints(original).entries()]
    assert sizes[0] == 30 and sizes[-1] == 31
    report = verify(original)
    assert report.ok and report.signed_size == 31, report.findings
    assert "legacy" in report.kinds()
    for cmd in (["tail", "-n", "5", "--json"], ["query", "--format", "json"], ["stats"]):
        done = rtrace(original, *cmd)
        assert done.returncode == 0, done.stderr
    tail = [
        json.loads(x) for x in rtrace(original, "tail", "-n", "3", "--json").stdout.splitlines()
    ]
    # --json prints the stored lines byte for byte: the original's carry no seq.
    assert [r.get("seq") for r in tail] == [None, None, 30]
    assert [r["subject"].get("i") for r in tail[:2]] == [28, 29]
    query = rtrace(original, "query", "--action", "rollback", "--format", "json").stdout
    assert [json.loads(x)["subject"]["i"] for x in query.splitlines()] == list(range(0, 30, 3))
    shown = rtrace(original, "show", history[7]["id"])
    assert shown.returncode == 0 and "agent-3" in shown.stdout
    assert rtrace(original, "show", "7").returncode == 0
    assert rtrace(original, "verify").returncode == 0
    proof = rtrace(original, "prove", "7")
    assert proof.returncode == 0, proof.stderr


def test_the_original_quirks_are_not_failures(original: Path) -> None:
    """Records stamped a moment off their file's day (two clock reads) and out of time order
    verify cleanly after adoption: they predate the log's integrity."""
    with DecisionLog(str(original)) as log:
        log.record("first", True, {}, {})
    report = verify(original)
    assert report.ok, report.findings
    assert not {"wrong_day", "clock_backwards"} & report.kinds()


@pytest.mark.parametrize("tamper", ["alter", "delete", "reorder"])
def test_tampering_with_adopted_records_is_detected(original: Path, tamper: str) -> None:
    """After adoption, altering, deleting or reordering a line of the original module is
    detected by verify like any other record."""
    assert record_decision("halt", True, {}, {})
    reasoning_trace.compat._close_all()
    day = sorted(original.glob("*.jsonl"))[0]
    lines = day.read_bytes().splitlines(keepends=True)
    if tamper == "alter":
        lines[3] = lines[3].replace(b"reason 3", b"reason X")
    elif tamper == "delete":
        del lines[3]
    else:
        lines[3], lines[4] = lines[4], lines[3]
    day.write_bytes(b"".join(lines))
    report = verify(original)
    assert not report.ok
    assert rtrace(original, "verify").returncode == 1


def test_many_original_writers_at_once_lose_no_line(tmp_path: Path) -> None:
    """Eight processes run the original algorithm at once with long reasons (so their lines
    interleave), two are killed mid-write, one line is torn by hand: the upgraded log records,
    keeps every line as it was, reads the records, and verify notes the odd lines only."""
    root = tmp_path / "log"
    procs = [
        subprocess.Popen(
            [sys.executable, SEED, str(root), "40", "20000", f"p{i}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    for proc in procs[:2]:
        assert proc.stdout is not None
        proc.stdout.readline()  # it has written one record and is writing more
        proc.send_signal(signal.SIGKILL)
    for proc in procs:
        proc.communicate(timeout=120)
    day = sorted(root.glob("*.jsonl"))[-1]
    with open(day, "a") as fh:  # deterministic quirks beside whatever the race produced
        fh.write('{"action": "upgrade_proposal", "approved": tr\n')
        fh.write('{"action": "x", "approved": true, {"action": "y"}\n')
    before = lines_of(root)
    if not day.read_bytes().endswith(b"\n"):  # a kill left a torn tail: cut on adoption
        before = before[:-1]
    with DecisionLog(str(root)) as log:
        new = log.record("after_upgrade", True, {}, {})
    after = lines_of(root)
    assert after[: len(before)] == before
    assert new.seq == len(before)
    report = verify(root)
    assert report.ok, report.failures[:3]
    unparseable = [f for f in report.findings if f.kind == "legacy_unparseable"]
    assert len(unparseable) >= 2
    with DecisionLog(str(root)) as log:
        records = list(log.read())
    assert len(records) == len(before) - len(unparseable) + 1
    assert [r.seq for r in records][-1] == new.seq


def test_the_original_and_the_new_writer_side_by_side(tmp_path: Path) -> None:
    """A process running the original module and a new writer process on one root at once:
    the new writer never fails, every line the original wrote stays in place, and those a
    writer found at the end of a file are recorded again, each naming its line."""
    root = tmp_path / "log"
    write_original(root, 3, datetime(2026, 5, 11, 12), timedelta(seconds=1))
    writer = start_writer(root, "new", 400, 2, "batch")
    assert writer.stdout is not None
    first = writer.stdout.readline()  # the new writer has adopted and recorded: from now on
    seed = subprocess.Popen(  # the original module's lines land among its records
        [sys.executable, SEED, str(root), "300", "10", "old", "0.004"],
        stdout=subprocess.PIPE,
        text=True,
    )
    out, err = writer.communicate(timeout=120)
    out = first + out
    assert writer.returncode == 0, err
    seed.communicate(timeout=120)
    assert seed.returncode == 0
    with DecisionLog(str(root)) as log:  # takes in what the original appended at the end
        log.record("last", True, {}, {})
        records = list(log.read())
    acked = {int(line.split()[0]) for line in out.splitlines()}
    seqs = [r.seq for r in records]
    assert seqs == list(range(len(seqs))) and acked <= set(seqs)
    found = {r.subject.get("i") for r in records if r.subject.get("agent_id") == "agent-old"}
    in_place = [
        orjson.loads(line)["subject"]["i"]
        for line in lines_of(root)
        if line.startswith(b'{"action": ') and b"agent-old" in line
    ]
    assert sorted(in_place) == list(range(300))  # every line of the original, in place
    assert sum(r.v == 0 for r in records) == 3  # only what preceded the new writer is legacy
    taken = [r for r in records if "legacy_source" in r.extra]
    assert len(taken) == len(found) > 0 and len(set(found)) == len(found)
    for r in taken:  # each names the very line it was taken from
        source = r.extra["legacy_source"]
        with open(root / source["file"], "rb") as fh:
            fh.seek(source["offset"])
            line = fh.readline().rstrip(b"\n")
        assert hashlib.sha256(line).hexdigest() == source["sha256"]
        assert orjson.loads(line)["subject"] == r.subject
    report = verify(root)
    assert report.ok, report.failures[:3]


def test_adopt_is_a_dry_run_until_told(original: Path) -> None:
    """rtrace adopt shows files, records and quirks and changes nothing; --yes signs them."""
    before = snapshot(original)
    done = on_a_terminal(original, "adopt")
    assert done.returncode == 0, done.stderr
    assert "30 records of the original module" in done.stdout and "dry run" in done.stdout
    plan = json.loads(rtrace(original, "adopt", "--json").stdout)
    assert plan["records"] == 30 and plan["adopted"] is False and plan["off_day"]
    assert snapshot(original) == before
    assert not (original / ".rtrace").exists()
    done = rtrace(original, "adopt", "--yes")
    assert done.returncode == 0 and "checkpoint of 30 records" in done.stdout + done.stderr
    assert Checkpoints(original).latest().size == 30  # type: ignore[union-attr]
    assert json.loads(rtrace(original, "adopt", "--json").stdout)["adopted"] is True
    for name, data in before.items():
        assert (original / name).read_bytes() == data


def statuses(root: Path) -> dict[str, str]:
    """Check name -> status of ``rtrace doctor`` on a log."""
    return {c.name: c.status for c in diagnose(root)}


def test_doctor_on_a_healthy_log(root: Path) -> None:
    """A healthy log: every check ok, exit 0, nothing under the root written."""
    with DecisionLog(str(root)) as log:
        log.record("a", True, {}, {})
    before = snapshot(root)
    assert set(statuses(root).values()) == {"ok"}
    done = on_a_terminal(root, "doctor")
    assert done.returncode == 0 and "FAIL" not in done.stdout and "ok" in done.stdout
    assert snapshot(root) == before


def test_doctor_on_broken_set_ups(original: Path, signing_key: Path, tmp_path: Path) -> None:
    """Each broken set-up is named with its fix: records not adopted, a corrupt key, a log
    shorter than its checkpoint, a missing root."""
    assert statuses(original)["legacy"] == "warn"
    with DecisionLog(str(original)) as log:
        log.record("a", True, {}, {})
    assert statuses(original)["legacy"] == "ok"
    signing_key.write_text("PRIVATE+KEY+garbage")
    assert statuses(original)["key"] == "fail"
    done = on_a_terminal(original, "doctor")
    assert done.returncode == 1 and "key" in done.stdout and "fix:" in done.stdout
    signing_key.unlink()
    assert statuses(original)["key"] == "fail"  # published a key: a missing one is a failure
    day = sorted(original.glob("*.jsonl"))[-1]
    day.write_bytes(b"".join(day.read_bytes().splitlines(keepends=True)[:-1]))
    assert statuses(original)["head"] == "fail"
    missing = diagnose(tmp_path / "nowhere")
    assert [(c.name, c.status) for c in missing] == [("root", "fail")]
    assert rtrace(tmp_path / "nowhere", "doctor").returncode == 1


def test_doctor_on_a_read_only_log(root: Path, tmp_path: Path) -> None:
    """A log on a read-only bind mount: doctor says records cannot be stored (needs root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only bind mount needs root (CI runs as root)")
    with DecisionLog(str(root)) as log:
        log.record("a", True, {}, {})
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "--bind", str(root), str(mnt)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)], check=True)
        checks = {c.name: c for c in diagnose(mnt)}
        assert checks["root"].status == "fail" and checks["root"].fix
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_log_that_cannot_record_is_never_quiet(
    patched_root: Path, signing_key: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """record_decision still returns False without raising, but a log that cannot store is
    logged at ERROR with its cause and fix, and counted."""
    assert record_decision("a", True, {}, {})
    reasoning_trace.compat._close_all()
    signing_key.write_text("garbage")
    before = counters().get("decisions_not_stored", 0)
    with caplog.at_level(logging.WARNING, "reasoning_trace"):
        assert record_decision("b", True, {}, {}) is False
        assert record_decision("c", True, {}, {}) is False
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert str(signing_key) in errors[0].getMessage() and "Fix:" in errors[0].getMessage()
    assert counters()["decisions_not_stored"] - before == 2
    with caplog.at_level(logging.WARNING, "reasoning_trace"):
        assert record_decision("", True, {}, {}) is False  # refused input: a warning
    assert caplog.records[-1].levelno == logging.WARNING


@pytest.fixture
def patched_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The original API pointed at a fresh directory."""
    root = tmp_path / "traces"
    monkeypatch.setattr(reasoning_trace, "_resolve_trace_dir", lambda: str(root))
    return root


def test_the_original_writing_while_the_first_new_writer_adopts(tmp_path: Path) -> None:
    """The original module keeps appending while the first new writer adopts its lines and
    records: the adopted prefix is what the writer counted (its first seq says so), later
    lines are taken in or stay in place, and the log verifies, signs and reads afterwards."""
    root = tmp_path / "log"
    write_original(root, 3, datetime(2026, 5, 11, 12), timedelta(seconds=1))
    seed = subprocess.Popen(
        [sys.executable, SEED, str(root), "400", "10", "old", "0.001"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert seed.stdout is not None
    for _ in range(50):
        seed.stdout.readline()
    writer = start_writer(root, "new", 60, 2, "batch")
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    seed.communicate(timeout=120)
    with DecisionLog(str(root)) as log:
        log.record("last", True, {}, {})
        records = list(log.read())
    assert [r.seq for r in records] == list(range(len(records)))
    report = verify(root)
    assert report.ok, report.failures[:3]
    assert report.signed_size == len(records)
    in_place = {
        orjson.loads(line)["subject"]["i"]
        for line in lines_of(root)
        if line.startswith(b'{"action": ') and b"agent-old" in line
    }
    assert in_place == set(range(400))
    assert {int(x.split()[0]) for x in out.splitlines()} <= {r.seq for r in records}


def test_odd_lines_of_the_original(tmp_path: Path) -> None:
    """A blank line, a line with NaN (which the original's json wrote), a whole last record
    missing its newline and one absurd timestamp: adoption keeps every line, verify passes,
    and new records are stamped with the writer's own clock."""
    root = tmp_path / "log"
    write_original(root, 4, datetime(2026, 5, 11, 12), timedelta(seconds=1))
    day = root / "2026-05-11.jsonl"
    lines = day.read_bytes().splitlines(keepends=True)
    nan = lines[1].replace(b'"reason": "reason 1"', b'"reason": "reason 1", "score": NaN')
    future = lines[2].replace(b'"timestamp": ', b'"timestamp": 1925000000.0, "was": ')
    day.write_bytes(lines[0] + b"\n" + nan + future + lines[3].rstrip(b"\n"))
    before = day.read_bytes()
    now = 1_800_000_000 * 10**9
    with DecisionLog(str(root), clock=lambda: now) as log:
        new = log.record("after", True, {}, {})
        history = list(log.read())
    assert new.seq == 4 and new.datetime_utc.startswith("2027-01-15")
    assert day.read_bytes() == before + b"\n"  # the last record's newline restored, nothing cut
    assert [d.subject.get("i") for d in history] == [0, 1, 2, 3, None]
    assert history[1].extra["score"] != history[1].extra["score"]  # NaN, read as it was written
    report = verify(root)
    assert report.ok and report.signed_size == 5, report.findings


def test_a_line_the_original_writes_during_an_append_is_taken_in(tmp_path: Path) -> None:
    """The original module appends a line to the day file after a writer checked the file's
    end and before its batch lands (the writer's clock read between the two does it here,
    deterministically): the next append takes the line's content in as a record saying where
    it came from, as for lines written between appends, and the log verifies."""
    root = tmp_path / "log"
    day = datetime(2026, 5, 12, 10)
    reads = iter(range(10**6))
    first = int((day - EPOCH).total_seconds() * 1e9)

    def clock() -> int:
        n = next(reads)
        if n == 1:  # inside the second record's append, after the head was checked
            write_original(root, 1, day + timedelta(seconds=1), timedelta(seconds=1))
        return first + n * 1_000_000

    with DecisionLog(str(root), clock=clock) as log:
        log.record("before", True, {}, {})
        log.record("during", True, {}, {})
        log.record("after", True, {}, {})
        taken = [d for d in log.read() if "legacy_source" in d.extra]
    assert [d.action for d in taken] == ["rollback"]  # the original's line (i=0: a rollback)
    assert taken[0].extra["legacy_source"]["file"] == "2026-05-12.jsonl"
    report = verify(root)
    assert report.ok, report.failures
