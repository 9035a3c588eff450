"""The file store under faults: torn tails, lost derived state, full and read-only disks."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from reasoning_trace import DecisionLog, LogRootMissing, StorageError

from .conftest import all_lines, run_py, snapshot


def seqs(root: Path) -> list[int]:
    """The seq of every line on disk, in file order."""
    return [orjson.loads(line)["seq"] for line in all_lines(root)]


def test_torn_tail_is_quarantined(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Bytes after the last newline are moved to quarantine/ and cut, with a warning."""
    with DecisionLog(str(root), sync="always") as log:
        d = log.record("a", True, {}, {})
    day_file = root / f"{d.day}.jsonl"
    with open(day_file, "ab") as fh:
        fh.write(b'{"action":"half-writ')
    caplog.set_level(logging.WARNING, "reasoning_trace")
    with DecisionLog(str(root), sync="always") as log:
        assert log.record("b", True, {}, {}).seq == 1
    assert seqs(root) == [0, 1]
    fragments = list((root / "quarantine").iterdir())
    assert [f.read_bytes() for f in fragments] == [b'{"action":"half-writ']
    assert "torn tail" in caplog.text and str(day_file) in caplog.text


def test_readers_ignore_an_incomplete_last_line(log: DecisionLog, root: Path) -> None:
    """recent() and iter() never return a line that has no newline yet."""
    d = log.record("a", True, {}, {})
    with open(root / f"{d.day}.jsonl", "ab") as fh:
        fh.write(d.line[:40])
    assert [x.seq for x in log.recent(10)] == [0]
    assert [x.seq for x in log.iter()] == [0]


def test_head_recovered_without_derived_files(root: Path) -> None:
    """With .rtrace deleted the next writer finds the head from the day files' tails."""
    with DecisionLog(str(root), sync="never") as log:
        for _ in range(3):
            log.record("a", True, {}, {})
    shutil.rmtree(root / ".rtrace")
    with DecisionLog(str(root), sync="never") as log:
        assert log.record("a", True, {}, {}).seq == 3
        assert len(log) == 4


def test_stale_head_cache_is_not_trusted(root: Path) -> None:
    """A head cached before another writer appended is detected by size and recomputed."""
    with DecisionLog(str(root), sync="never") as a, DecisionLog(str(root), sync="never") as b:
        a.record("a", True, {}, {})
        b.record("b", True, {}, {})
        a.record("a", True, {}, {})
        (root / ".rtrace" / "lock").write_bytes(b"0 - 0 0")  # a wrong cache
        assert b.record("b", True, {}, {}).seq == 3
    assert seqs(root) == [0, 1, 2, 3]


def test_lock_file_deleted_under_writers(root: Path) -> None:
    """Deleting the lock file while logs are open does not split the lock."""
    with DecisionLog(str(root), sync="never") as a, DecisionLog(str(root), sync="never") as b:
        a.record("a", True, {}, {})
        os.unlink(root / ".rtrace" / "lock")
        b.record("b", True, {}, {})
        a.record("a", True, {}, {})
    assert seqs(root) == [0, 1, 2]


def test_root_deleted_under_a_running_writer(root: Path) -> None:
    """A vanished root raises LogRootMissing and is not silently recreated; restoring it resumes."""
    backup = root.parent / "backup"
    with DecisionLog(str(root), sync="always") as log:
        log.record("a", True, {}, {})
        shutil.copytree(root, backup)
        shutil.rmtree(root)
        with pytest.raises(LogRootMissing, match="removed"):
            log.record("b", True, {}, {})
        assert not root.exists()
        shutil.copytree(backup, root)
        assert log.record("c", True, {}, {}).seq == 1
    assert seqs(root) == [0, 1]


def test_partial_write_is_rolled_back(root: Path) -> None:
    """A write cut short by the file-size limit leaves no partial line and consumes no seq."""
    script = f"""
import resource, signal, sys
from reasoning_trace import DecisionLog, StorageError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
log = DecisionLog({str(root)!r}, sync="always")
log.record("small", True, {{}}, {{}})
size = sum(p.stat().st_size for p in log.root.glob("*.jsonl"))
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 300, resource.RLIM_INFINITY))
try:
    log.record("big", True, {{}}, {{"pad": "x" * 2000}})
except StorageError as exc:
    print("refused:", exc)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
print("next seq", log.record("after", True, {{}}, {{}}).seq)
"""
    result = run_py("-c", script)
    assert result.returncode == 0, result.stderr
    assert "refused: could not write" in result.stdout and "File too large" in result.stdout
    assert "next seq 1" in result.stdout
    assert [orjson.loads(x)["action"] for x in all_lines(root)] == ["small", "after"]


def test_disk_full(small_fs: Path) -> None:
    """On a full disk record raises StorageError, changes nothing, and resumes once freed."""
    root = small_fs / "log"
    filler = small_fs / "filler"
    with DecisionLog(str(root), sync="batch") as log:
        log.record("first", True, {}, {})
        with open(filler, "wb", buffering=0) as fh:  # fill the filesystem completely
            with pytest.raises(OSError) as info:
                while True:
                    fh.write(b"\0" * 4096)
            assert info.value.errno == errno.ENOSPC
        before = snapshot(root)
        with pytest.raises(StorageError, match="No space left on device"):
            for _ in range(100):
                log.record("fill", True, {}, {"pad": "y" * 3000})
        full = snapshot(root)
        assert all(v.endswith(b"\n") for k, v in full.items() if k.endswith(".jsonl"))
        n = len(seqs(root))
        assert seqs(root) == list(range(n))
        with pytest.raises(StorageError):
            log.record("still full", True, {}, {"pad": "y" * 3000})
        assert snapshot(root) == full
        filler.unlink()
        assert log.record("after", True, {}, {}).seq == n
    assert len(before) >= 1


def test_read_only_filesystem(small_fs: Path) -> None:
    """On a read-only filesystem record raises StorageError; after remounting rw it resumes."""
    root = small_fs / "log"
    with DecisionLog(str(root), sync="batch") as log:
        log.record("first", True, {}, {})
    before = snapshot(root)
    # Linux refuses a read-only remount while files are open for writing, so the writer
    # opens the log after the filesystem went read-only (as after errors=remount-ro).
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    try:
        with DecisionLog(str(root), sync="batch") as log:
            with pytest.raises(StorageError, match="Read-only file system"):
                log.record("refused", True, {}, {})
            assert snapshot(root) == before
            subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
            assert log.record("after", True, {}, {}).seq == 1
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    assert seqs(root) == [0, 1]


def test_corrupt_line_is_reported_with_its_place(log: DecisionLog, root: Path) -> None:
    """A line that is not a record stops a scan with its file, line number and the problem."""
    from reasoning_trace import CorruptLine

    for _ in range(3):
        d = log.record("a", True, {}, {})
    day_file = root / f"{d.day}.jsonl"
    lines = day_file.read_bytes().splitlines(keepends=True)
    lines[1] = b'{"seq": 1, "action": "edited"}\n'
    day_file.write_bytes(b"".join(lines))
    with pytest.raises(CorruptLine) as info:
        list(log.iter())
    assert info.value.file == str(day_file) and info.value.line == 2
    assert "missing field" in str(info.value) and f"{day_file}:2" in str(info.value)
