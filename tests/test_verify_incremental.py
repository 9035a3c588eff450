"""The incremental verifier: it reads only what is new, agrees with a full pass, finds an edit
of a verified record at the next full pass (or at once through a tripwire), and never writes."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from reasoning_trace import DecisionLog
from reasoning_trace.checkpoint import Checkpoint, Checkpoints
from reasoning_trace.layout import Layout
from reasoning_trace.note import Signer, sign_note
from reasoning_trace.record import parse_utc
from reasoning_trace.tripwire import Snapshot
from reasoning_trace.verify import verify
from reasoning_trace.verify_incremental import IncrementalVerifier

DAY_US = 86_400_000_000
START_US = 1795478400 * 1_000_000  # 2026-11-24T00:00:00Z


class Clock:
    """A writer's clock in nanoseconds: one record a minute from ``start_us`` on."""

    def __init__(self, start_us: int = START_US) -> None:
        self.now_us = start_us

    def __call__(self) -> int:
        self.now_us += 60_000_000
        return self.now_us * 1000


class Seconds:
    """A verifier's clock in Unix seconds, moved by hand."""

    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def record(log: DecisionLog, n: int, start: int = 0) -> None:
    """Record ``n`` decisions numbered from ``start``."""
    for i in range(start, start + n):
        log.record("gate", i % 3 != 0, {"safety": {"passed": i % 3 != 0}}, {"i": i}, f"r{i}")


def open_log(root: Path, clock: Clock) -> DecisionLog:
    """A log that signs only when asked (``checkpoint()``) or when a UTC day ends."""
    return DecisionLog(
        str(root), sync="never", clock=clock, checkpoint_every=0, checkpoint_seconds=0
    )


def everything(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` (derived ones too) with its bytes and mtime."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def edit_in_place(path: Path, old: bytes, new: bytes) -> None:
    """Replace ``old`` by ``new`` (same length) and put the mtime back: an edit that no stat
    tripwire can see."""
    assert len(old) == len(new)
    st = path.stat()
    data = path.read_bytes()
    assert data.count(old) == 1
    with open(path, "r+b") as fh:
        fh.seek(data.index(old))
        fh.write(new)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_after_a_full_pass_only_new_records_are_read(root: Path) -> None:
    """The first check is a full pass; the next ones read from the newest verified checkpoint
    on, advance with each new checkpoint, and say what they covered."""
    clock = Clock()
    log = open_log(root, clock)
    record(log, 30)
    log.checkpoint()
    record(log, 5, 30)
    verifier = IncrementalVerifier(root, clock=Seconds(clock.now_us / 1e6))
    first = verifier.check()
    assert (first.mode, first.ok, first.records, first.signed_size) == ("full", True, 35, 30)
    assert first.reason == "the first check" and first.checkpoint is not None
    assert [f.kind for f in first.findings] == ["unsigned"]
    record(log, 10, 35)
    log.checkpoint()
    record(log, 2, 45)
    second = verifier.check()
    assert (second.mode, second.ok, second.checked_from) == ("incremental", True, 30)
    assert (second.records, second.signed_size, second.checkpoints) == (47, 45, 2)
    assert second.checkpoint is not None and second.checkpoint.size == 45
    assert second.full_at == first.started and second.full_ok
    third = verifier.check()
    assert (third.mode, third.checked_from, third.signed_size) == ("incremental", 45, 45)
    assert [(f.kind, f.seq_from, f.seq_to) for f in third.findings] == [("unsigned", 45, 46)]
    assert third.to_json()["full"] == {"ran_at": first.started, "ok": True}
    log.close()


def test_an_edit_of_a_verified_record_is_found_by_the_next_full_pass(root: Path) -> None:
    """An edit of an already verified record that no tripwire sees (same size, mtime put
    back) is not read by incremental checks; the next scheduled full pass finds it, names
    the file and line, and the failure stays until the next full pass (``retry_every``)."""
    clock = Clock()
    log = open_log(root, clock)
    record(log, 20)
    log.checkpoint()
    seconds = Seconds(clock.now_us / 1e6)
    verifier = IncrementalVerifier(root, full_every=600, retry_every=60, clock=seconds)
    assert verifier.check().ok
    day = Layout(root).day_files()[0]
    edit_in_place(day, b'"reason":"r7"', b'"reason":"R7"')
    seconds.at += 10
    quiet = verifier.check()
    assert quiet.mode == "incremental" and quiet.ok  # it never read seq 7 again
    seconds.at += 600
    full = verifier.check()
    assert full.mode == "full" and full.reason == "scheduled" and not full.ok
    altered = [f for f in full.findings if f.kind == "altered"]
    assert [(f.file, f.line, f.seq_from) for f in altered] == [(str(day), 8, 7)]
    seconds.at += 10
    assert verifier.check() is full  # failed: stays failed, nothing read until a full pass
    assert verifier.full_passes == 2
    seconds.at += 60
    again = verifier.check()
    assert again.mode == "full" and again.reason == "the last check failed" and not again.ok
    assert verifier.full_passes == 3
    log.close()


def test_a_rewritten_day_file_brings_the_full_pass_forward(root: Path) -> None:
    """Bytes changed in place (mtime moved, size not) trip the tripwire: the next check is a
    full pass, which fails with the altered record; put back, the next full pass passes."""
    clock = Clock()
    log = open_log(root, clock)
    record(log, 12)
    log.checkpoint()
    verifier = IncrementalVerifier(root, clock=Seconds(clock.now_us / 1e6))
    assert verifier.check().ok
    day = Layout(root).day_files()[0]
    original = day.read_bytes()
    rewrite(day, original.replace(b'"reason":"r5"', b'"reason":"X5"'))
    failed = verifier.check()
    assert failed.mode == "full" and "rewritten" in failed.reason and not failed.ok
    assert ("altered", 6, 5) in [(f.kind, f.line, f.seq_from) for f in failed.findings]
    rewrite(day, original)
    healed = verifier.check()
    assert healed.mode == "full" and healed.ok
    log.close()


def test_an_edit_before_the_next_checkpoint_is_found_incrementally(root: Path) -> None:
    """A record changed after it was written but before it was signed (its file appended to
    since, so no tripwire fires) is found by the incremental check that reads the new
    checkpoint: altered, with its file, line and seq."""
    clock = Clock()
    log = open_log(root, clock)
    record(log, 10)
    log.checkpoint()
    verifier = IncrementalVerifier(root, clock=Seconds(clock.now_us / 1e6))
    assert verifier.check().ok
    record(log, 5, 10)
    day = Layout(root).day_files()[0]
    day.write_bytes(day.read_bytes().replace(b'"reason":"r12"', b'"reason":"x12"'))
    record(log, 5, 15)
    log.checkpoint()
    check = verifier.check()
    assert check.mode == "incremental" and not check.ok
    kinds = [(f.kind, f.line, f.seq_from) for f in check.findings]
    assert ("altered", 13, 12) in kinds and check.signed_size == 10
    assert check.checkpoint is not None and check.checkpoint.size == 20  # signature verified
    assert not verify(root).ok
    log.close()


def test_incremental_checks_agree_with_full_passes_across_days(root: Path) -> None:
    """Random batches over three UTC days, signed at random: after every batch the
    incremental check says what a full pass says (records, signed size, verdict)."""
    rng = random.Random(7)
    clock = Clock()
    log = open_log(root, clock)
    record(log, 3)
    seconds = Seconds(0.0)
    verifier = IncrementalVerifier(root, full_every=10**9, clock=seconds)
    n = 3
    modes = set()
    while clock.now_us < START_US + 3 * DAY_US:
        batch = rng.randrange(1, 400)
        record(log, batch, n)
        n += batch
        if rng.random() < 0.5:
            log.checkpoint()
        seconds.at = clock.now_us / 1e6
        check = verifier.check()
        report = verify(root, now=seconds.at)
        modes.add(check.mode)
        assert (check.ok, check.records, check.signed_size) == (
            report.ok,
            report.records,
            report.signed_size,
        )
    assert modes == {"full", "incremental"} and len(Layout(root).days()) >= 3
    log.close()


def test_a_forged_checkpoint_is_a_finding(root: Path, tmp_path: Path) -> None:
    """A checkpoint line signed by a key the log never published is an incremental failure
    (unknown_key, with its file and line)."""
    clock = Clock()
    log = open_log(root, clock)
    record(log, 8)
    log.checkpoint()
    verifier = IncrementalVerifier(root, clock=Seconds(clock.now_us / 1e6))
    assert verifier.check().ok
    record(log, 4, 8)
    cps = Checkpoints(root)
    latest = cps.latest()
    assert latest is not None
    origin = cps.origin() or ""
    forged = Checkpoint(origin, 12, b"\x07" * 32)
    note = sign_note(forged.body(), [Signer.generate(origin)])
    cps.append(forged, note, parse_utc(latest.datetime_utc))  # into the same file
    check = verifier.check()
    assert check.mode == "incremental" and not check.ok
    assert [f.kind for f in check.findings if f.failure] == ["unknown_key"]
    log.close()


def test_a_log_cut_short_is_found(root: Path) -> None:
    """A day file cut below what was read trips the tripwire; the full pass says truncated."""
    clock = Clock()
    log = open_log(root, clock)
    record(log, 10)
    log.checkpoint()
    log.close()
    verifier = IncrementalVerifier(root, clock=Seconds(clock.now_us / 1e6))
    assert verifier.check().ok
    day = Layout(root).day_files()[0]
    rewrite(day, b"".join(day.read_bytes().splitlines(keepends=True)[:6]))
    check = verifier.check()
    assert check.mode == "full" and "truncated" in {f.kind for f in check.findings}


def test_checking_writes_nothing_even_on_a_read_only_log(root: Path) -> None:
    """Full passes and incremental checks only read: nothing under the root (derived files
    included) changes, on a log whose files and folders are read-only."""
    clock = Clock()
    log = open_log(root, clock)
    record(log, 15)
    log.checkpoint()
    record(log, 3, 15)
    log.close()
    for path in [root, *root.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        before = everything(root)
        verifier = IncrementalVerifier(root, clock=Seconds(clock.now_us / 1e6))
        checks = [verifier.check(), verifier.check(), verifier.full()]
        assert [c.mode for c in checks] == ["full", "incremental", "full"]
        assert all(c.ok for c in checks)
        assert everything(root) == before
    finally:
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_tripwire_tells_growth_from_rewrites(tmp_path: Path) -> None:
    """Appending to the newest file and adding a later day is growth; changing an older
    file, rewriting the newest in place, cutting it, removing a file or adding an earlier
    day is not."""
    root = tmp_path / "log"
    root.mkdir()
    layout = Layout(root)
    older, newest = root / "2026-11-24.jsonl", root / "2026-11-25.jsonl"
    older.write_bytes(b"a\n")
    newest.write_bytes(b"b\n")
    first = Snapshot.take(layout)
    with open(newest, "ab") as fh:
        fh.write(b"c\n")
    (root / "2026-11-26.jsonl").write_bytes(b"d\n")
    base = Snapshot.take(layout)
    assert base.changed_since(first) is None
    newest = root / "2026-11-26.jsonl"

    def why(change: str) -> str:
        nonlocal base
        reason = Snapshot.take(layout).changed_since(base) or ""
        base = Snapshot.take(layout)
        assert change in reason, reason
        return reason

    (root / "2026-11-23.jsonl").write_bytes(b"z\n")
    why("2026-11-23 appeared before 2026-11-26")
    (root / "2026-11-23.jsonl").unlink()
    base = Snapshot.take(layout)
    rewrite(older, b"A\n")
    why("day file 2026-11-24 changed after its day")
    rewrite(newest, b"D\n")
    why("day file 2026-11-26 was rewritten")
    rewrite(newest, b"")
    why("day file 2026-11-26 was rewritten")
    newest.unlink()
    why("day file 2026-11-26 is gone")


def rewrite(path: Path, data: bytes) -> None:
    """Write ``data`` over ``path`` and move its mtime on by a second (file times come from a
    coarse clock: two writes a millisecond apart may share one)."""
    st = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@pytest.mark.parametrize("kind", ["quarantine", "vkey"])
def test_new_keys_or_fragments_bring_a_full_pass(root: Path, kind: str) -> None:
    """A new fragment in quarantine/ or a change of the published keys makes the next check
    a full pass."""
    clock = Clock()
    log = open_log(root, clock)
    record(log, 4)
    log.checkpoint()
    log.close()
    verifier = IncrementalVerifier(root, clock=Seconds(clock.now_us / 1e6))
    verifier.check()
    assert verifier.check().mode == "incremental"
    if kind == "quarantine":
        (root / "quarantine").mkdir()
        (root / "quarantine" / "x.torn").write_bytes(b"{")
    else:
        with open(Layout(root).vkey, "a") as fh:
            fh.write(f"{Signer.generate('other/log').verifier}\n")
    assert verifier.check().mode == "full"
