"""After a failure the verifier keeps checking: on a log that grows while it is failed, a
repair turns the result back to passing, a new edit is reported, and every result is fresh
(its own ``ran_at``, ``records`` counting the log as it is), in the library and through a
``Watch`` (the verifier a server's badge shows)."""

from __future__ import annotations

from pathlib import Path

from reasoning_trace.layout import Layout
from reasoning_trace.verify_incremental import Check, IncrementalVerifier
from reasoning_trace.verify_watch import Watch

from .browser import wait_for
from .test_verify_incremental import Clock, Seconds, edit_in_place, open_log, record


def altered(check: Check) -> list[int | None]:
    """The seqs a check says were altered."""
    return [f.seq_from for f in check.findings if f.kind == "altered"]


def test_a_failure_while_the_log_grows_is_checked_again(root: Path) -> None:
    """Edit seq 5 of a growing log: the scheduled full pass fails. While the log grows the
    failure is checked again at each check (fresh ``ran_at``, all records counted); repaired,
    the next check passes; an edit of seq 30 (seen by the tripwire) fails again, and one of
    seq 7 made while the log grows and fails is reported alone once seq 30 is put back."""
    clock = Clock()
    log = open_log(root, clock)
    record(log, 20)
    log.checkpoint()
    seconds = Seconds(clock.now_us / 1e6)
    verifier = IncrementalVerifier(root, full_every=600, clock=seconds)
    assert verifier.check().ok
    day = Layout(root).day_files()[0]

    def grow(n: int, start: int) -> None:
        """Record ``n`` more and sign them, and move the verifier's clock 5 s on."""
        record(log, n, start)
        log.checkpoint()
        seconds.at += 5

    edit_in_place(day, b'"reason":"r5"', b'"reason":"R5"')
    grow(10, 20)
    seconds.at += 600
    failed = verifier.check()
    assert failed.mode == "full" and not failed.ok and altered(failed) == [5]

    grow(10, 30)
    still = verifier.check()
    assert still is not failed and still.started > failed.started
    assert (still.mode, still.ok, still.records, altered(still)) == ("full", False, 40, [5])

    edit_in_place(day, b'"reason":"R5"', b'"reason":"r5"')
    grow(10, 40)
    repaired = verifier.check()
    assert repaired.ok and repaired.records == 50 and repaired.started > still.started

    day.write_bytes(day.read_bytes().replace(b'"reason":"r30"', b'"reason":"R30"'))
    seconds.at += 5
    again = verifier.check()
    assert again.mode == "full" and not again.ok and altered(again) == [30]

    edit_in_place(day, b'"reason":"R30"', b'"reason":"r30"')
    edit_in_place(day, b'"reason":"r7"', b'"reason":"R7"')
    grow(10, 50)
    moved = verifier.check()
    assert (moved.ok, moved.records, altered(moved)) == (False, 60, [7])
    edit_in_place(day, b'"reason":"R7"', b'"reason":"r7"')
    seconds.at += 5
    assert verifier.check().ok
    log.close()


def test_retries_after_a_failure_are_rate_limited(root: Path) -> None:
    """With ``retry_every`` a failed verifier runs a full pass at most that often; between
    two, a check answers the failing result."""
    clock = Clock()
    log = open_log(root, clock)
    record(log, 10)
    log.checkpoint()
    seconds = Seconds(clock.now_us / 1e6)
    verifier = IncrementalVerifier(root, retry_every=30, clock=seconds)
    day = Layout(root).day_files()[0]
    edit_in_place(day, b'"reason":"r2"', b'"reason":"R2"')
    failed = verifier.check()
    assert not failed.ok and verifier.full_passes == 1
    seconds.at += 10
    assert verifier.check() is failed
    seconds.at += 20
    retried = verifier.check()
    assert retried is not failed and verifier.full_passes == 2
    log.close()


def test_a_watch_shows_the_repair_of_a_growing_log(root: Path) -> None:
    """Through a ``Watch`` (real thread, real clock, conditions awaited with deadlines): a
    failure while the log grows is followed by fresh results, and the repair turns it ok."""
    clock = Clock()
    log = open_log(root, clock)
    record(log, 20)
    log.checkpoint()
    day = Layout(root).day_files()[0]
    edit_in_place(day, b'"reason":"r5"', b'"reason":"R5"')
    watch = Watch(root, every=0.05)
    watch.start()
    try:
        first = wait_for("a failure", lambda: watch.ok is False and watch.status())
        record(log, 10, 20)
        log.checkpoint()
        later = wait_for(
            "a fresh failure counting the new records",
            lambda: (s := watch.status()).get("records") == 30 and s,
        )
        assert later["ran_at"] > first["ran_at"] and later["status"] == "failed"
        edit_in_place(day, b'"reason":"R5"', b'"reason":"r5"')
        record(log, 5, 30)
        log.checkpoint()
        ok = wait_for("the repair", lambda: watch.ok is True and watch.status())
        assert ok["records"] == 35
    finally:
        watch.stop()
        log.close()
