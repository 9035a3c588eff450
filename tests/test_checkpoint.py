"""Checkpoints: the schedule, the files, the key, rotation, and refusal to sign a rewrite."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import orjson
import pytest

from reasoning_trace import DecisionLog, ForkError
from reasoning_trace.checkpoint import Checkpoint, Checkpoints, open_checkpoint
from reasoning_trace.keys import rotate_key
from reasoning_trace.note import Verifier
from reasoning_trace.verify import verify

from .test_log import MIDNIGHT_US, Clock


def sizes(root: Path) -> list[int]:
    """Sizes of every checkpoint signed, in order."""
    return [e.size for e in Checkpoints(root).entries()]


def test_fixed_cadence_and_close(root: Path) -> None:
    """A checkpoint at every multiple of N records, and one on clean close."""
    with DecisionLog(str(root), sync="never", checkpoint_every=10, checkpoint_seconds=0) as log:
        for i in range(35):
            log.record("a", True, {}, {"i": i})
    assert sizes(root) == [10, 20, 30, 35]
    newest = (root / "checkpoint").read_text()
    vkeys = Checkpoints(root).verifiers()
    assert open_checkpoint(newest, vkeys).size == 35


def test_day_end_checkpoint_covers_the_whole_day(root: Path) -> None:
    """When the first record of a new UTC day is written, the previous day is signed whole."""
    clock = Clock(MIDNIGHT_US - 4)
    with DecisionLog(
        str(root), sync="never", clock=clock, checkpoint_every=0, checkpoint_seconds=0
    ) as log:
        for i in range(6):
            log.record("a", True, {}, {"i": i})
    assert sizes(root)[0] == 3  # records 0..2 were on 2026-11-25
    assert sizes(root)[-1] == 6


def test_files_and_key_mode(root: Path, signing_key: Path) -> None:
    """The key is created outside the root with mode 0600; vkey, checkpoint and jsonl appear."""
    with DecisionLog(str(root), sync="never") as log:
        log.record("a", True, {}, {})
    assert stat.S_IMODE(os.stat(signing_key).st_mode) == 0o600
    assert not str(signing_key).startswith(str(root))
    (vkey,) = Checkpoints(root).verifiers()
    assert str(vkey).startswith("reasoning-trace/")
    entry = orjson.loads((next(iter(Checkpoints(root).files()))).read_bytes().splitlines()[0])
    assert set(entry) >= {"size", "root", "datetime_utc", "note"}


def test_refuses_to_sign_a_rewritten_history(root: Path) -> None:
    """If signed records were rewritten, the log refuses to sign again: loudly, not silently."""
    with DecisionLog(str(root), sync="never", checkpoint_every=0) as log:
        for i in range(5):
            log.record("a", True, {}, {"i": i})
        log.checkpoint()
    day = next(root.glob("*.jsonl"))
    lines = day.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"i":1', b'"i":7')
    day.write_bytes(b"".join(lines))
    (root / ".rtrace" / "hashes").unlink()  # the rewriter also rebuilt the derived tree
    with DecisionLog(str(root), sync="never", checkpoint_every=0) as log:
        log.record("b", True, {}, {})
        with pytest.raises(ForkError, match=r"does not extend .* may have been rewritten"):
            log.checkpoint()
    assert sizes(root) == [5]  # nothing signed, not even on close


def test_key_rotation_keeps_old_checkpoints_verifying(root: Path, signing_key: Path) -> None:
    """After rotation the new key signs; retired keys stay published and keep verifying."""
    with DecisionLog(str(root), sync="never", checkpoint_every=0) as log:
        log.record("a", True, {}, {})
        log.checkpoint()
    signer, retired = rotate_key(Checkpoints(root).origin() or "", signing_key)
    assert retired is not None and retired.exists()
    with DecisionLog(str(root), sync="never", checkpoint_every=0) as log:
        log.record("b", True, {}, {})
        note = log.checkpoint()
    keys = Checkpoints(root).verifiers()
    assert len(keys) == 2 and str(keys[1]) == str(signer.verifier)
    assert open_checkpoint(note, [signer.verifier]).size == 2
    report = verify(root)
    assert report.ok and report.checkpoints == 2
    only_old = verify(root, [keys[0]])
    assert "unknown_key" in only_old.kinds()


def test_checkpoint_body_parse_is_strict() -> None:
    """Checkpoint bodies parse exactly: origin, decimal size, base64 32-byte root."""
    body = Checkpoint("o", 5, bytes(32)).body()
    assert Checkpoint.parse(body) == Checkpoint("o", 5, bytes(32))
    from reasoning_trace import NoteError

    for bad in ("o\n05\n" + body.split("\n")[2] + "\n", "o\n5\nAAAA\n", "o\n5\n", body[:-1]):
        with pytest.raises(NoteError):
            Checkpoint.parse(bad)
    assert isinstance(Verifier, type)
