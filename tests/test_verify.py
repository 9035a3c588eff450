"""The tamper suite: every kind of edit to a real multi-day log is detected and located."""

from __future__ import annotations

import base64
import shutil
import tempfile
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reasoning_trace import DecisionLog
from reasoning_trace.checkpoint import Checkpoint, Checkpoints
from reasoning_trace.note import Signer, sign_note
from reasoning_trace.record import format_record, format_utc, uuid7
from reasoning_trace.verify import verify

DAY_US = 86_400_000_000
START_US = 1795478400 * 1_000_000  # 2026-11-24T00:00:00Z
DAYS = ("2026-11-24", "2026-11-25", "2026-11-26")
PER_DAY = 20


class Clock:
    """Twenty records spread over each of three days."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        day, i = divmod(self.n, PER_DAY)
        self.n += 1
        return (START_US + day * DAY_US + (i + 1) * 3_600_000_000) * 1000


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 60-record log over three days, checkpointed every 8 records; and its verifier key."""
    base = tmp_path_factory.mktemp("pristine")
    key = base / "signing.key"
    root = base / "log"
    with DecisionLog(
        str(root),
        sync="never",
        clock=Clock(),
        key=str(key),
        origin="example/log",
        checkpoint_every=8,
        checkpoint_seconds=0,
    ) as log:
        for i in range(PER_DAY * 3):
            log.record(
                "upgrade_proposal",
                i % 3 != 0,
                {"safety": {"passed": i % 3 != 0, "reason": f"check {i}"}},
                {"agent_id": f"a{i % 4}", "i": i},
                f"reason {i}",
            )
    vkey = (root / "checkpoints" / "vkey").read_text().strip()
    return root, vkey


@pytest.fixture
def log_copy(pristine: tuple[Path, str], tmp_path: Path) -> Path:
    """A fresh copy of the pristine log to tamper with."""
    dest = tmp_path / "log"
    shutil.copytree(pristine[0], dest)
    return dest


def lines_of(path: Path) -> list[bytes]:
    """The lines of a day file, with their newlines."""
    return path.read_bytes().splitlines(keepends=True)


def edit(path: Path, change: object) -> None:
    """Apply change(lines) -> lines to a day file."""
    lines = lines_of(path)
    path.write_bytes(b"".join(change(lines)))  # type: ignore[operator]


def kinds(root: Path, vkey: str) -> set[str]:
    """The failure kinds verify reports for the log at root."""
    return {f.kind for f in verify(root, vkey).failures}


def test_untouched_log_is_clean(pristine: tuple[Path, str]) -> None:
    """The pristine log verifies: every checkpoint matches, nothing unsigned, no failure."""
    root, vkey = pristine
    report = verify(root, vkey)
    assert report.ok, report.findings
    assert report.records == 60 and report.signed_size == 60
    assert report.checkpoints >= 60 // 8
    assert report.kinds() == set()
    assert len(list(Checkpoints(root).files())) >= 2


def test_flipped_byte_is_located_exactly(log_copy: Path, pristine: tuple[Path, str]) -> None:
    """One flipped byte in a record's reason is reported as that record altered."""
    day = log_copy / "2026-11-25.jsonl"
    edit(day, lambda ls: [*ls[:4], ls[4].replace(b"reason 24", b"reason 2X"), *ls[5:]])
    report = verify(log_copy, pristine[1])
    altered = [f for f in report.findings if f.kind == "altered"]
    assert [(f.file, f.line, f.seq_from) for f in altered] == [(str(day), 5, 24)]
    assert "checkpoint_mismatch" in report.kinds() and not report.ok


def test_changed_verdict_reserialised(log_copy: Path, pristine: tuple[Path, str]) -> None:
    """A verdict flipped and the line re-serialised validly is still caught, at its line."""
    day = log_copy / "2026-11-26.jsonl"

    def flip(ls: list[bytes]) -> list[bytes]:
        obj = orjson.loads(ls[2])
        obj["approved"] = not obj["approved"]
        return [*ls[:2], orjson.dumps(obj, option=orjson.OPT_SORT_KEYS) + b"\n", *ls[3:]]

    edit(day, flip)
    report = verify(log_copy, pristine[1])
    assert [(f.kind, f.line, f.seq_from) for f in report.findings if f.kind == "altered"] == [
        ("altered", 3, 42)
    ]


def test_deleted_record(log_copy: Path, pristine: tuple[Path, str]) -> None:
    """A deleted record is a seq gap naming the missing seq."""
    edit(log_copy / "2026-11-24.jsonl", lambda ls: ls[:7] + ls[8:])
    report = verify(log_copy, pristine[1])
    deleted = [f for f in report.findings if f.kind == "deleted"]
    assert [(f.seq_from, f.seq_to) for f in deleted] == [(7, 7)]


def test_duplicated_record(log_copy: Path, pristine: tuple[Path, str]) -> None:
    """A record copied again is reported as a duplicate at the copy."""
    edit(log_copy / "2026-11-24.jsonl", lambda ls: [*ls[:11], ls[10], *ls[11:]])
    report = verify(log_copy, pristine[1])
    assert [(f.kind, f.line, f.seq_from) for f in report.failures if f.kind == "duplicate"] == [
        ("duplicate", 12, 10)
    ]


def test_swapped_records(log_copy: Path, pristine: tuple[Path, str]) -> None:
    """Two swapped records are reported as reordered."""
    edit(log_copy / "2026-11-25.jsonl", lambda ls: [*ls[:3], ls[4], ls[3], *ls[5:]])
    assert kinds(log_copy, pristine[1]) == {"reordered", "checkpoint_mismatch"}


def test_inserted_forged_record(log_copy: Path, pristine: tuple[Path, str]) -> None:
    """A forged record slipped in before a genuine one with its seq is reported as inserted."""

    def forge(ls: list[bytes]) -> list[bytes]:
        obj = orjson.loads(ls[6])
        obj["reason"] = "approved by nobody"
        forged = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS) + b"\n"
        return [*ls[:6], forged, *ls[6:]]

    edit(log_copy / "2026-11-25.jsonl", forge)
    report = verify(log_copy, pristine[1])
    inserted = [f for f in report.failures if f.kind == "inserted"]
    assert [(f.line, f.seq_from) for f in inserted] == [(7, 26)]
    assert "altered" not in report.kinds()


def test_deleted_day_file(log_copy: Path, pristine: tuple[Path, str]) -> None:
    """A whole day file removed is reported as a missing day file with its seqs."""
    (log_copy / "2026-11-25.jsonl").unlink()
    report = verify(log_copy, pristine[1])
    missing = [f for f in report.failures if f.kind == "missing_day_file"]
    assert [(f.seq_from, f.seq_to) for f in missing] == [(20, 39)]
    assert "2026-11-25" in missing[0].message


def test_truncated_below_signed_size(log_copy: Path, pristine: tuple[Path, str]) -> None:
    """Cutting the newest day below a signed size is reported as truncation."""
    edit(log_copy / "2026-11-26.jsonl", lambda ls: ls[:5])
    report = verify(log_copy, pristine[1])
    assert "truncated" in report.kinds()
    assert report.records == 45


def test_edited_checkpoint_entry(log_copy: Path, pristine: tuple[Path, str]) -> None:
    """Editing a checkpoint's size/root fields, or its note, is caught."""
    day = Checkpoints(log_copy).files()[0]

    def bump(ls: list[bytes]) -> list[bytes]:
        obj = orjson.loads(ls[0])
        obj["size"] += 1
        return [orjson.dumps(obj) + b"\n", *ls[1:]]

    edit(day, bump)
    assert "bad_checkpoint" in kinds(log_copy, pristine[1])

    def reroot(ls: list[bytes]) -> list[bytes]:
        obj = orjson.loads(ls[1])
        cp = Checkpoint.parse(obj["note"].split("\n\n")[0] + "\n")
        fake = Checkpoint(cp.origin, cp.size, bytes(32)).body()
        obj["note"] = fake + "\n" + obj["note"].split("\n\n", 1)[1]
        obj["root"] = base64.b64encode(bytes(32)).decode()
        return [ls[0], orjson.dumps(obj) + b"\n", *ls[2:]]

    edit(day, reroot)
    assert "bad_signature" in kinds(log_copy, pristine[1])


def test_checkpoint_signed_by_another_key(log_copy: Path, pristine: tuple[Path, str]) -> None:
    """A checkpoint replaced by one signed by a key nobody published is an unknown key."""
    day = Checkpoints(log_copy).files()[0]
    mallory = Signer.generate("example/log")

    def resign(ls: list[bytes]) -> list[bytes]:
        obj = orjson.loads(ls[0])
        obj["note"] = sign_note(obj["note"].split("\n\n")[0] + "\n", [mallory])
        return [orjson.dumps(obj) + b"\n", *ls[1:]]

    edit(day, resign)
    report = verify(log_copy, pristine[1])
    assert {f.kind for f in report.failures} == {"unknown_key"}
    assert "bad_signature" not in report.kinds()


def test_forked_checkpoints(log_copy: Path, pristine: tuple[Path, str], signing_key: Path) -> None:
    """Two checkpoints of one size with different roots, both validly signed, are a fork."""
    files = Checkpoints(log_copy)
    first = next(files.entries())
    key = Path(str(pristine[0].parent / "signing.key"))
    signer = Signer.parse(key.read_text())
    other = Checkpoint("example/log", first.size, bytes(range(32)))
    files.append(other, sign_note(other.body(), [signer]), 1795651200_000000)
    report = verify(log_copy, pristine[1])
    assert "fork" in report.kinds()


def test_auditor_key_beats_a_replaced_vkey(log_copy: Path, pristine: tuple[Path, str]) -> None:
    """Rewriting records, re-signing every checkpoint and replacing vkey fools only the log's
    own key file: with the auditor's key, verify fails."""
    edit(
        log_copy / "2026-11-24.jsonl", lambda ls: [ls[0].replace(b"reason 0", b"reason Z"), *ls[1:]]
    )
    shutil.rmtree(log_copy / "checkpoints")
    (log_copy / "checkpoint").unlink()
    shutil.rmtree(log_copy / ".rtrace")
    with (
        tempfile.TemporaryDirectory() as keydir,
        DecisionLog(
            str(log_copy), key=str(Path(keydir) / "k"), origin="example/log", checkpoint_every=8
        ) as log,
    ):
        log.checkpoint()
    assert verify(log_copy).ok  # the log's own (replaced) key is fooled
    report = verify(log_copy, pristine[1])
    assert not report.ok and "unknown_key" in report.kinds()


def test_without_derived_hashes_change_is_located_to_a_span(
    log_copy: Path, pristine: tuple[Path, str]
) -> None:
    """With the derived files deleted, an edit is still found, located between checkpoints."""
    shutil.rmtree(log_copy / ".rtrace")
    edit(
        log_copy / "2026-11-25.jsonl",
        lambda ls: [*ls[:9], ls[9].replace(b"reason 29", b"reason 92"), *ls[10:]],
    )
    report = verify(log_copy, pristine[1])
    mismatch = [f for f in report.findings if f.kind == "checkpoint_mismatch"]
    assert mismatch and mismatch[0].seq_from <= 29 <= mismatch[0].seq_to
    assert mismatch[0].seq_to - mismatch[0].seq_from < 8


def test_notes_are_not_failures(log_copy: Path, pristine: tuple[Path, str]) -> None:
    """Quarantined fragments, unsigned records and backwards clocks are notes only."""
    (log_copy / "quarantine").mkdir()
    (log_copy / "quarantine" / "2026-11-26.jsonl.10.1.torn").write_bytes(b'{"acti')
    late = START_US + 2 * DAY_US + 1_000_000  # earlier than the last record's time
    # The writer never stamps a record before its predecessor: a log written by an older
    # version may hold such a line, appended here as that version wrote it.
    last = DecisionLog(str(log_copy)).recent(1)[0]
    when = format_utc(late)
    stale = last._replace(seq=last.seq + 1, id=uuid7(), timestamp=late / 1e6, datetime_utc=when)
    with open(log_copy / f"{when[:10]}.jsonl", "ab") as fh:
        fh.write(format_record(stale) + b"\n")
    report = verify(log_copy, pristine[1], now=late / 1e6 + 1)  # the unsigned line is fresh
    assert report.ok, report.failures
    assert report.kinds() == {"crash_fragment", "unsigned", "clock_backwards"}
    later = verify(log_copy, pristine[1], now=late / 1e6 + 3600)  # an hour on: past due
    assert "unsigned_stale" in later.kinds() and not later.ok


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_byte_edits_are_always_detected(
    pristine: tuple[Path, str], tmp_path: Path, data: st.DataObject
) -> None:
    """Any change of one byte of any checkpointed record makes verify fail."""
    root = Path(tempfile.mkdtemp(dir=tmp_path)) / "log"
    shutil.copytree(pristine[0], root)
    day = root / data.draw(st.sampled_from(DAYS))
    raw = bytearray((root / f"{day.name}.jsonl").read_bytes())
    at = data.draw(st.integers(0, len(raw) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[at]))
    raw[at] = new
    (root / f"{day.name}.jsonl").write_bytes(bytes(raw))
    assert not verify(root, pristine[1]).ok


def test_worker_processes_give_the_same_report(log_copy: Path, pristine: tuple[Path, str]) -> None:
    """Hashing in worker processes (as for big logs) reports exactly what one process does."""
    import reasoning_trace.leaf_pass as v

    clean_inline = verify(log_copy, pristine[1], workers=1)
    clean_workers = verify(log_copy, pristine[1], workers=2)
    assert clean_inline == clean_workers and clean_workers.ok
    edit(log_copy / "2026-11-25.jsonl", lambda ls: [*ls[:3], ls[4], ls[3], *ls[5:]])
    small = v.CHUNK_BYTES
    v.CHUNK_BYTES = 1500  # many chunks per day file, lines cut across chunk edges
    try:
        chunked = verify(log_copy, pristine[1], workers=1)
    finally:
        v.CHUNK_BYTES = small
    assert chunked.findings == verify(log_copy, pristine[1], workers=2).findings
    assert {f.kind for f in chunked.failures} == {"reordered", "checkpoint_mismatch"}
    assert "clock_backwards" in chunked.kinds()  # the swap also puts time backwards: a note
