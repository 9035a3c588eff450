"""One origin and one signing key per log: new logs get their own, existing logs keep theirs
(moved, copied, or signing as the old host-wide ``reasoning-trace/<hostname>``), a configured
origin that is not the log's is refused, and rotating one log's key leaves the others alone."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import reasoning_trace
from reasoning_trace import DecisionLog, OriginConflict, UsageError
from reasoning_trace.checkpoint import Checkpoints
from reasoning_trace.doctor import diagnose
from reasoning_trace.keys import key_path
from reasoning_trace.note import Signer, check_key_name
from reasoning_trace.origin import host_origin, is_host_origin, log_origin, root_origin
from reasoning_trace.verify import verify

from .terminal import on_a_terminal as rtrace  # the words a person at a terminal reads
from .test_auditor import everything

HOST = socket.gethostname()


@pytest.fixture
def keys_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keys chosen as a user's are, per origin in the per-user config directory (here a
    private one): no ``$REASONING_TRACE_KEY``, no ``$REASONING_TRACE_ORIGIN``."""
    monkeypatch.delenv("REASONING_TRACE_KEY", raising=False)
    monkeypatch.delenv("REASONING_TRACE_ORIGIN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "reasoning-trace" / "keys"


def write(root: Path, n: int = 3, origin: str | None = None, shared_ok: bool = False) -> None:
    """Record ``n`` decisions in the log at ``root`` and close it (a checkpoint on close)."""
    with DecisionLog(str(root), sync="never", origin=origin, shared_ok=shared_ok) as log:
        for i in range(n):
            log.record("gate", i % 2 == 0, {"safety": {"passed": True}}, {"i": i})


def key_files(folder: Path) -> list[str]:
    """The names of the signing key files in ``folder`` (not the ``.logs`` lists beside them,
    nor retired keys)."""
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".key")


def origin_of(root: Path) -> str | None:
    """The origin the log's files say it signs as."""
    return Checkpoints(root).origin()


def note_origins(root: Path) -> list[str]:
    """The origin line of every checkpoint the log signed, in order."""
    return [e.note.split("\n", 1)[0] for e in Checkpoints(root).entries()]


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """``done``, asserted to have exited 0."""
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture
def legacy_pair(tmp_path: Path, keys_dir: Path) -> tuple[Path, Path]:
    """Two logs written before logs had their own origin: both sign as
    ``reasoning-trace/<hostname>`` with the one host-wide key file (shared then, so now
    only when told it is)."""
    a, b = tmp_path / "a" / "log", tmp_path / "b" / "log"
    for root in (a, b):
        write(root, origin=host_origin(), shared_ok=True)
    return a, b


# --- new logs ---------------------------------------------------------------------------------


def test_two_logs_get_their_own_origins_and_keys(tmp_path: Path, keys_dir: Path) -> None:
    """Two new logs of one host (same folder name, different places) sign as two origins with
    two verifier keys in two key files; neither log's key verifies the other."""
    a, b = tmp_path / "one" / "log", tmp_path / "two" / "log"
    write(a)
    write(b)
    origin_a, origin_b = origin_of(a), origin_of(b)
    assert origin_a and origin_b and origin_a != origin_b
    for origin in (origin_a, origin_b):
        assert origin.startswith(f"reasoning-trace/{HOST}/log-")
    assert note_origins(a) == [origin_a] and note_origins(b) == [origin_b]
    vkey_a = (a / "checkpoints" / "vkey").read_text()
    vkey_b = (b / "checkpoints" / "vkey").read_text()
    assert vkey_a != vkey_b
    assert key_files(keys_dir) == sorted(key_path(o).name for o in (origin_a, origin_b))
    assert verify(a, vkey_a.strip()).ok and verify(b, vkey_b.strip()).ok
    assert "unknown_key" in verify(a, vkey_b.strip()).kinds()


def test_the_default_origin_is_a_short_valid_key_name(tmp_path: Path) -> None:
    """``reasoning-trace/<hostname>/<folder>-<8 hex>``: the folder's odd characters made safe,
    stable for one path, different for another, a valid signed-note key name."""
    odd = tmp_path / "my log+ü\t"
    origin = root_origin(odd)
    check_key_name(origin)
    prefix, name = origin.rsplit("/", 1)
    assert prefix == f"reasoning-trace/{HOST}"
    assert name.startswith("my_log___") and len(name.rsplit("-", 1)[1]) == 8
    assert root_origin(odd) == origin != root_origin(tmp_path / "other")
    assert root_origin(Path("/")).split("/")[-1].startswith("log-")
    assert len(root_origin(tmp_path / ("x" * 300))) < 140
    assert is_host_origin(host_origin()) and not is_host_origin(origin)


def test_a_new_log_takes_a_configured_origin(
    tmp_path: Path, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$REASONING_TRACE_ORIGIN`` and ``keys init --origin`` name a new log's origin; one
    that is no key name is refused, exit 2."""
    monkeypatch.setenv("REASONING_TRACE_ORIGIN", "example.com/gate")
    write(tmp_path / "env")
    assert note_origins(tmp_path / "env") == ["example.com/gate"]
    monkeypatch.delenv("REASONING_TRACE_ORIGIN")
    shown = ok(rtrace(tmp_path / "cli", "keys", "init", "--origin", "example.com/cli"))
    assert shown.stdout.startswith("example.com/cli+")
    write(tmp_path / "cli")
    assert note_origins(tmp_path / "cli") == ["example.com/cli"]
    bad = rtrace(tmp_path / "bad", "keys", "init", "--origin", "has space")
    assert bad.returncode == 2 and "--origin" in bad.stderr and "Traceback" not in bad.stderr
    with pytest.raises(UsageError, match="origin"):
        DecisionLog(str(tmp_path / "bad2"), origin="a+b")


def test_an_explicit_key_file_names_the_origin_of_new_logs(
    tmp_path: Path, signing_key: Path
) -> None:
    """With ``$REASONING_TRACE_KEY``, as before, every new log signs with that one key: the
    first log names it, the next takes the key's name as its origin, and both verify."""
    write(tmp_path / "first")
    write(tmp_path / "second")
    name = Signer.parse(signing_key.read_text()).name
    assert origin_of(tmp_path / "first") == origin_of(tmp_path / "second") == name
    assert verify(tmp_path / "first").ok and verify(tmp_path / "second").ok


# --- existing logs keep theirs ----------------------------------------------------------------


def test_a_host_origin_log_keeps_its_origin_and_key(legacy_pair: tuple[Path, Path]) -> None:
    """A log that signs as ``reasoning-trace/<hostname>`` goes on signing as it, with the key
    file of that origin, which is not replaced."""
    a, _ = legacy_pair
    host_key = key_path(host_origin())
    before = host_key.read_bytes()
    write(a, 2)
    assert set(note_origins(a)) == {host_origin()}
    assert len(Checkpoints(a).verifiers()) == 1
    assert host_key.read_bytes() == before
    assert verify(a, Signer.parse(before.decode()).verifier).ok


@pytest.mark.parametrize("kept", ["vkey", "checkpoints", "checkpoint"])
def test_a_moved_log_keeps_its_origin_from_any_of_its_files(
    tmp_path: Path, keys_dir: Path, kept: str
) -> None:
    """A log's origin is read from its published key, its checkpoint files or its newest
    note, whichever it still has: moved elsewhere, it keeps the origin it had."""
    root = tmp_path / "here" / "log"
    write(root)
    origin = origin_of(root)
    moved = tmp_path / "there" / "renamed"
    moved.parent.mkdir()
    shutil.move(root, moved)
    if kept != "vkey":
        (moved / "checkpoints" / "vkey").unlink()
    if kept != "checkpoints":
        for day in (moved / "checkpoints").glob("*.jsonl"):
            day.unlink()
    if kept != "checkpoint":
        (moved / "checkpoint").unlink()
    assert origin != root_origin(moved)
    assert log_origin(moved) == origin


def test_moved_and_copied_logs_keep_their_origin_and_verify(tmp_path: Path, keys_dir: Path) -> None:
    """A log moved to another folder keeps its origin and key (no new key file) and records
    on; a copy keeps the origin too, and both verify."""
    root = tmp_path / "here" / "log"
    write(root)
    origin = origin_of(root)
    keys_before = key_files(keys_dir)
    moved = tmp_path / "there" / "moved"
    moved.parent.mkdir()
    shutil.move(root, moved)
    copy = tmp_path / "copy"
    shutil.copytree(moved, copy)
    write(moved, 2)
    assert set(note_origins(moved)) == {origin}
    assert len(Checkpoints(moved).verifiers()) == 1
    assert key_files(keys_dir) == keys_before
    assert verify(moved).ok and verify(moved).records == 5
    assert origin_of(copy) == origin and verify(copy).ok
    assert ok(rtrace(moved, "verify")).stdout.count("OK") == 1


# --- conflicts --------------------------------------------------------------------------------


def test_a_conflicting_configured_origin_is_refused_and_changes_nothing(
    tmp_path: Path, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An origin configured for a log that signs as another is refused with an error naming
    both (argument, environment, CLI); reading still works; the log is left as it was."""
    root = tmp_path / "log"
    write(root)
    origin = origin_of(root)
    assert origin is not None
    before = snapshot_all(root)
    with pytest.raises(OriginConflict) as err:
        DecisionLog(str(root), origin="example.com/other")
    assert err.value.origin == origin and err.value.configured == "example.com/other"
    assert origin in str(err.value) and "example.com/other" in str(err.value)
    monkeypatch.setenv("REASONING_TRACE_ORIGIN", "example.com/other")
    with DecisionLog(str(root)) as log:
        assert len(log) == 3 and len(log.recent(5)) == 3  # reading needs no origin
        with pytest.raises(OriginConflict, match=r"\$REASONING_TRACE_ORIGIN"):
            log.record("gate", True, {}, {})
    record = rtrace(root, "record", "--action", "gate", "--approved")
    assert record.returncode == 2 and origin in record.stderr
    assert "REASONING_TRACE_ORIGIN" in record.stderr and "Traceback" not in record.stderr
    monkeypatch.delenv("REASONING_TRACE_ORIGIN")
    init = rtrace(root, "keys", "init", "--origin", "example.com/other")
    assert init.returncode == 2 and origin in init.stderr and "example.com/other" in init.stderr
    assert snapshot_all(root) == before
    assert key_files(keys_dir) == [key_path(origin).name]
    assert verify(root).ok


def test_the_original_api_reports_a_conflicting_origin(
    tmp_path: Path,
    keys_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``record_decision`` with a conflicting ``$REASONING_TRACE_ORIGIN`` returns False and
    logs the fix; nothing is written."""
    root = tmp_path / "log"
    write(root)
    before = snapshot_all(root)
    monkeypatch.setenv("REASONING_TRACE_ORIGIN", "example.com/other")
    monkeypatch.setattr(reasoning_trace, "_resolve_trace_dir", lambda: str(root))
    try:
        with caplog.at_level(logging.ERROR, logger="reasoning_trace"):
            assert reasoning_trace.record_decision("gate", True, {}, {}) is False
    finally:
        reasoning_trace.compat._close_all()
    assert any("REASONING_TRACE_ORIGIN" in r.getMessage() for r in caplog.records)
    assert snapshot_all(root) == before


def snapshot_all(root: Path) -> dict[str, bytes]:
    """Every file under the root but the derived ``.rtrace/``."""
    return {k: v for k, v in everything(root).items() if not k.startswith(".rtrace")}


# --- rotation -----------------------------------------------------------------------------


def test_rotating_one_log_leaves_another_untouched(tmp_path: Path, keys_dir: Path) -> None:
    """``rtrace keys rotate --dir A`` changes A's key only: B's key file and published keys
    stay as they were, B records and verifies with its key; A verifies with both of its."""
    a, b = tmp_path / "a" / "log", tmp_path / "b" / "log"
    for root in (a, b):
        ok(rtrace(root, "demo", "-n", "5", "--seed", "1"))
    b_key = key_path(origin_of(b) or "")
    b_before = (b_key.read_bytes(), (b / "checkpoints" / "vkey").read_bytes())
    rotated = ok(rtrace(a, "keys", "rotate"))
    assert rotated.stdout.startswith("new key: ")
    ok(rtrace(a, "demo", "-n", "2"))
    ok(rtrace(b, "demo", "-n", "2"))
    assert (b_key.read_bytes(), (b / "checkpoints" / "vkey").read_bytes()) == b_before
    assert len(ok(rtrace(a, "keys", "show")).stdout.split()) == 2
    assert "OK: 7 records" in ok(rtrace(b, "verify", "--vkey", b_before[1].decode())).stdout
    assert "OK: 7 records" in ok(rtrace(a, "verify")).stdout


def test_rotating_a_host_wide_key_is_refused_without_saying_so(
    legacy_pair: tuple[Path, Path],
) -> None:
    """``keys rotate`` on a log signing as ``reasoning-trace/<hostname>`` refuses (exit 2),
    saying its key may sign other logs and naming both ways on; nothing changes."""
    a, b = legacy_pair
    host_key = key_path(host_origin())
    before = (host_key.read_bytes(), snapshot_all(a), snapshot_all(b))
    done = rtrace(a, "keys", "rotate")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "other logs" in done.stderr and "--shared-ok" in done.stderr
    assert f"--origin {root_origin(a)}" in done.stderr
    assert (host_key.read_bytes(), snapshot_all(a), snapshot_all(b)) == before
    assert key_files(host_key.parent) == [host_key.name]


def test_moving_a_host_wide_log_to_its_own_origin(legacy_pair: tuple[Path, Path]) -> None:
    """``keys rotate --origin`` moves one log to an origin and key of its own: its records are
    signed under the new origin at once, old and new checkpoints verify (pinned keys and a
    kept note too), and the other log keeps the host-wide key and verifies."""
    a, b = legacy_pair
    host_key = key_path(host_origin())
    shared = host_key.read_bytes()
    kept = (a / "checkpoint").read_text()
    own = root_origin(a)
    done = ok(rtrace(a, "keys", "rotate", "--origin", own))
    assert f"{host_origin()} -> {own}" in done.stderr
    assert (a / "checkpoint").read_text().startswith(f"{own}\n3\n")
    assert key_path(own).exists() and host_key.read_bytes() == shared
    assert origin_of(a) == own
    write(a, 2)
    write(b, 2)
    assert note_origins(a)[0] == host_origin() and set(note_origins(a)[1:]) == {own}
    assert set(note_origins(b)) == {host_origin()}
    pinned = tmp_file(a.parent / "a.vkey", (a / "checkpoints" / "vkey").read_text())
    (a.parent / "kept.note").write_text(kept)
    report = ok(rtrace(a, "verify", "--vkey", pinned, "--trusted", str(a.parent / "kept.note")))
    assert "OK: 5 records" in report.stdout
    assert verify(b, Signer.parse(shared.decode()).verifier).ok
    again = rtrace(b, "keys", "rotate", "--origin", own)  # a's origin: never shared
    assert again.returncode == 2 and "already exists" in again.stderr


def test_doctor_names_the_origin_and_a_shared_host_key(
    tmp_path: Path, legacy_pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``rtrace doctor``'s key check names a log's own origin as usable, warns that a
    host-wide key may sign other logs (saying how to move), and fails on a conflicting
    ``$REASONING_TRACE_ORIGIN``."""
    a, _ = legacy_pair
    write(tmp_path / "new")
    own = next(c for c in diagnose(tmp_path / "new") if c.name == "key")
    assert own.status == "ok" and str(origin_of(tmp_path / "new")) in own.detail
    shared = next(c for c in diagnose(a) if c.name == "key")
    assert shared.status == "warn" and "other logs" in shared.detail
    assert f"--origin {root_origin(a)}" in shared.fix
    monkeypatch.setenv("REASONING_TRACE_ORIGIN", "example.com/other")
    conflict = next(c for c in diagnose(a) if c.name == "key")
    assert conflict.status == "fail" and host_origin() in conflict.detail


def test_rotating_a_host_wide_key_when_told_it_is_shared(legacy_pair: tuple[Path, Path]) -> None:
    """``keys rotate --shared-ok`` rotates the host-wide key as asked (the old file kept); the
    other log takes the new key on its next write and still verifies."""
    a, b = legacy_pair
    host_key = key_path(host_origin())
    done = ok(rtrace(a, "keys", "rotate", "--shared-ok"))
    assert "old signing key kept at" in done.stderr
    new = Signer.parse(host_key.read_text())
    assert done.stdout.split()[-1] == str(new.verifier)
    write(b, 1)
    assert str(new.verifier) in (b / "checkpoints" / "vkey").read_text()
    assert verify(a).ok and verify(b).ok


def tmp_file(path: Path, text: str) -> str:
    """Write ``text`` to ``path``; return the path as a string."""
    path.write_text(text)
    return str(path)


# --- reading ----------------------------------------------------------------------------------


@pytest.fixture
def read_only_copy(tmp_path: Path, keys_dir: Path) -> Iterator[Path]:
    """A copy of a written log on a read-only bind mount (needs root, as in CI), with a key
    directory that holds no key."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only bind mount needs root (CI runs as root)")
    root = tmp_path / "log"
    write(root, 4)
    shutil.copytree(root, tmp_path / "copy")
    shutil.rmtree(keys_dir)
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "--bind", str(tmp_path / "copy"), str(mnt)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)], check=True)
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_read_only_copy_verifies_and_reading_creates_no_key(
    read_only_copy: Path, keys_dir: Path
) -> None:
    """Verifying and reading a read-only copy, where no signing key exists, answers as the
    log and creates no key and no file: choosing an origin only reads."""
    before = everything(read_only_copy)
    origin = origin_of(read_only_copy)
    assert log_origin(read_only_copy) == origin
    assert verify(read_only_copy).ok
    assert "OK: 4 records" in ok(rtrace(read_only_copy, "verify")).stdout
    for cmd in (["keys", "show"], ["checkpoint"], ["prove", "2"], ["show", "1"], ["doctor"]):
        done = rtrace(read_only_copy, *cmd)
        assert "Traceback" not in done.stderr, (cmd, done.stderr)
    with DecisionLog(str(read_only_copy), create=False) as log:
        assert len(log) == 4 and log.prove(1).tree_size == 4
    assert everything(read_only_copy) == before
    assert not keys_dir.exists()
