"""One signing key per log, and a key command that fails changes nothing, driven as a user
drives them: real folders, a private per-user config folder, ``rtrace`` in its own process.

A new log does not take another log's existing key file (a configured origin, the same
``$REASONING_TRACE_ORIGIN`` for two logs, a log moved away from its folder) unless told the
key is shared; ``keys rotate`` refuses a key that other logs sign with (listed in the key's
``.logs`` file), a log it cannot write (a read-only copy) and a log that does not exist, and a
rotation that fails half way puts everything back; demo logs keep their key in their own
temporary folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import reasoning_trace
from reasoning_trace import DecisionLog, SharedKeyError
from reasoning_trace.checkpoint import Checkpoints
from reasoning_trace.keys import key_path, rotate_log_key

from .test_cli_record import serve_demo

SRC = Path(reasoning_trace.__file__).parent.parent
ORIGIN = "example.com/gate"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private per-user config folder (``$XDG_CONFIG_HOME``) where keys go per origin, as a
    user's do: no ``$REASONING_TRACE_KEY``, no ``$REASONING_TRACE_ORIGIN``."""
    monkeypatch.delenv("REASONING_TRACE_KEY", raising=False)
    monkeypatch.delenv("REASONING_TRACE_ORIGIN", raising=False)
    monkeypatch.delenv("REASONING_TRACE_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("PYTHONPATH", str(SRC))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    return tmp_path / "config"


def rtrace(
    root: Path | None,
    *args: str,
    env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
    limit_file_size: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """``rtrace [--dir root] ARGS`` of this source tree in its own process (after ``prefix``,
    a command such as ``setpriv ...``; with files limited to ``limit_file_size`` bytes)."""

    def limit() -> None:
        import resource

        if limit_file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    where = ["--dir", str(root)] if root is not None else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", "reasoning_trace", *where, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        preexec_fn=limit,
    )


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """``done``, asserted to have exited 0."""
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def refused(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """``done``'s stderr, asserted to be a refusal (exit 2, no traceback) naming ``words``."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in done.stderr, (word, done.stderr)
    return done.stderr


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (none when it does not exist), with its bytes."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def vkey(root: Path) -> str:
    """The log's published verifier keys, as ``checkpoints/vkey`` holds them."""
    return (root / "checkpoints" / "vkey").read_text()


def record(root: Path, n: int = 2, env: dict[str, str] | None = None) -> None:
    """Record ``n`` decisions into the log at ``root`` through ``rtrace record``."""
    for i in range(n):
        ok(rtrace(root, "record", "--action", "gate", "--approved", "--subject", f"i={i}", env=env))


def verifies_with(root: Path, pinned: str, records: int) -> None:
    """``rtrace verify --vkey`` with the key an auditor pinned says OK for ``records``."""
    path = root.parent / f"{root.name}.pinned.vkey"
    path.write_text(pinned)
    done = ok(rtrace(root, "verify", "--vkey", str(path), "--json"))
    summary = json.loads(done.stdout.splitlines()[-1])["summary"]
    assert summary["ok"] is True and summary["records"] == records, done.stdout


# --- a new log does not take another log's key -------------------------------------------------


def test_keys_init_refuses_an_origin_whose_key_is_another_logs(
    tmp_path: Path, config: Path
) -> None:
    """``keys init --origin O`` for log B, where log A already signs as O, is refused (exit 2)
    naming O and A and saying how to share on purpose; B is not created, no key changes, and
    rotating A afterwards leaves nothing of B's to break."""
    a, b = tmp_path / "a", tmp_path / "b"
    ok(rtrace(a, "keys", "init", "--origin", ORIGIN))
    record(a)
    keys_before = files(config)
    err = refused(rtrace(b, "keys", "init", "--origin", ORIGIN), ORIGIN, "another log", str(a))
    assert "--shared-ok" in err and "nothing was changed" in err
    assert not b.exists() and files(config) == keys_before
    ok(rtrace(a, "keys", "rotate"))  # A's key is A's alone: no --shared-ok needed
    assert len(vkey(a).split()) == 2 and not b.exists()


def test_one_configured_origin_for_two_logs_is_refused_for_the_second(
    tmp_path: Path, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``$REASONING_TRACE_ORIGIN`` set for two logs, the second one's first record is
    refused (exit 2: the origin, the first log, the variable), it records nothing and the
    key is unchanged; the library raises ``SharedKeyError`` naming both, and records with
    ``shared_ok=True``."""
    a, b = tmp_path / "a", tmp_path / "b"
    env = {"REASONING_TRACE_ORIGIN": ORIGIN}
    record(a, env=env)
    keys_before = files(config)
    done = rtrace(b, "record", "--action", "gate", "--approved", env=env)
    refused(done, ORIGIN, str(a), "$REASONING_TRACE_ORIGIN", "--shared-ok")
    assert files(config) == keys_before and not list(b.glob("*.jsonl"))
    monkeypatch.setenv("REASONING_TRACE_ORIGIN", ORIGIN)
    with DecisionLog(str(b), sync="never") as log, pytest.raises(SharedKeyError) as err:
        log.record("gate", True, {}, {})
    assert err.value.origin == ORIGIN and err.value.others == [os.path.realpath(a)]
    assert files(config) == keys_before and not list(b.glob("*.jsonl"))
    with DecisionLog(str(b), sync="never", shared_ok=True) as log:
        log.record("gate", True, {}, {})
    assert vkey(b) == vkey(a)  # shared, as asked


def test_a_new_log_in_a_moved_logs_folder_gets_no_key_of_the_moved_one(
    tmp_path: Path, config: Path
) -> None:
    """A log moved away keeps its origin and key; a new log started in the folder it left
    would get that same origin by default, and is refused rather than signing with the moved
    log's key; the moved log records and verifies with its pinned key."""
    here, there = tmp_path / "log", tmp_path / "moved"
    record(here)
    pinned = vkey(here)
    shutil.move(here, there)
    record(there, 1)  # written at its new place: listed there
    refused(rtrace(here, "record", "--action", "gate", "--approved"), str(there), "--origin")
    assert not list(here.glob("*.jsonl"))
    verifies_with(there, pinned, 3)


# --- rotate refuses a key other logs use ---------------------------------------------------


def test_rotate_refuses_a_key_shared_on_purpose_and_names_the_other_log(
    tmp_path: Path, config: Path
) -> None:
    """B shares A's key on purpose (``keys init --shared-ok``); ``keys rotate`` of A then
    refuses (exit 2) naming B, and changes no key or published key; B verifies with the key
    its auditor pinned; ``doctor`` warns about the shared key. Moving A to an origin of its
    own leaves B's key alone; with ``--shared-ok`` a shared key rotates for both."""
    a, b = tmp_path / "a", tmp_path / "b"
    ok(rtrace(a, "keys", "init", "--origin", ORIGIN))
    record(a)
    shared = ok(rtrace(b, "keys", "init", "--origin", ORIGIN, "--shared-ok")).stdout
    assert shared.strip() == ok(rtrace(a, "keys", "show")).stdout.strip()
    record(b)
    pinned_b = vkey(b)
    before = (files(config), vkey(a), vkey(b))
    refused(rtrace(a, "keys", "rotate"), str(b), "--shared-ok", "other logs")
    assert (files(config), vkey(a), vkey(b)) == before
    checks = [json.loads(line) for line in ok(rtrace(a, "doctor", "--json")).stdout.splitlines()]
    (key,) = [c for c in checks if c["name"] == "key"]
    assert key["status"] == "warn" and str(b) in key["detail"]
    ok(rtrace(a, "keys", "rotate", "--origin", "example.com/gate-a"))
    record(b, 1)
    assert vkey(b) == pinned_b and key_path(ORIGIN).read_bytes() == before[0][key_rel(config)]
    verifies_with(b, pinned_b, 3)
    c = tmp_path / "c"
    ok(rtrace(c, "keys", "init", "--origin", ORIGIN, "--shared-ok"))
    refused(rtrace(b, "keys", "rotate"), str(c))
    ok(rtrace(b, "keys", "rotate", "--shared-ok"))
    record(c, 1)
    assert len(vkey(c).split()) == 2 and vkey(c).split()[-1] == vkey(b).split()[-1]


def key_rel(config: Path) -> str:
    """Where ``ORIGIN``'s key file is, relative to the config folder."""
    return str(key_path(ORIGIN).relative_to(config))


def test_rotate_of_a_writable_copy_refuses_the_original_logs_key(
    tmp_path: Path, config: Path
) -> None:
    """A copy signs as the original (same origin, same key file): ``keys rotate`` on the copy
    refuses (exit 2) naming the original, whose key and published keys stay as they were."""
    a = tmp_path / "a"
    record(a)
    copy = tmp_path / "copy"
    shutil.copytree(a, copy)
    before = (files(config), vkey(a), vkey(copy))
    refused(rtrace(copy, "keys", "rotate"), str(a), "--shared-ok")
    assert (files(config), vkey(a), vkey(copy)) == before


# --- a failed rotate changes nothing -------------------------------------------------------


def without_dac_override() -> tuple[str, ...]:
    """A command prefix that runs without the power to write files that are not writable
    (root without ``CAP_DAC_OVERRIDE``); empty for a user who has not got it anyway."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to drop root's CAP_DAC_OVERRIDE")
    drop = "-dac_override,-dac_read_search"
    return ("setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}")


def test_rotate_of_a_log_whose_vkey_cannot_be_written_changes_nothing(
    tmp_path: Path, config: Path
) -> None:
    """``checkpoints/vkey`` not writable: ``keys rotate`` refuses (exit 2, "this log cannot be
    written", naming vkey) before touching a key: key file, key folder and vkey are as they
    were, and the next writer publishes no new key."""
    a = tmp_path / "a"
    record(a)
    pinned = vkey(a)
    (a / "checkpoints" / "vkey").chmod(0o444)
    before = (files(config), vkey(a))
    done = rtrace(a, "keys", "rotate", prefix=without_dac_override())
    refused(done, "this log cannot be written", "vkey")
    assert (files(config), vkey(a)) == before
    (a / "checkpoints" / "vkey").chmod(0o644)
    record(a, 1)
    assert vkey(a) == pinned
    verifies_with(a, pinned, 3)


def test_a_rotate_that_fails_half_way_puts_everything_back(tmp_path: Path, config: Path) -> None:
    """The new verifier key cannot be appended to ``checkpoints/vkey`` (the file may grow no
    further): ``keys rotate`` fails (exit 1, saying the key was not rotated) and the key file,
    the retired keys beside it and vkey are exactly as they were; the next writer signs with
    the old key and publishes nothing new."""
    a = tmp_path / "a"
    record(a)
    ok(rtrace(a, "keys", "rotate"))
    ok(rtrace(a, "keys", "rotate"))  # vkey now outgrows a key file
    pinned = vkey(a)
    before = (files(config), vkey(a))
    done = rtrace(a, "keys", "rotate", limit_file_size=len(pinned.encode()))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "not rotated" in done.stderr and "vkey" in done.stderr
    assert (files(config), vkey(a)) == before
    record(a, 1)
    assert vkey(a) == pinned
    verifies_with(a, pinned, 3)


def test_a_new_key_that_cannot_be_put_in_place_is_withdrawn(
    tmp_path: Path, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last step of a rotation (the new key file replacing the old) fails: the verifier
    key already published is taken back out of vkey, and no retired copy is left."""
    a = tmp_path / "a"
    record(a)
    before = (files(config), vkey(a))

    def fail(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        rotate_log_key(a)
    monkeypatch.undo()
    assert (files(config), vkey(a)) == before


@pytest.fixture
def read_only_copy(tmp_path: Path, config: Path) -> Iterator[tuple[Path, Path]]:
    """A written log and a copy of it on a read-only bind mount (needs root, as in CI)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only bind mount needs root (CI runs as root)")
    root = tmp_path / "log"
    record(root)
    shutil.copytree(root, tmp_path / "copy")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "--bind", str(tmp_path / "copy"), str(mnt)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)], check=True)
        yield root, mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_rotate_of_a_read_only_copy_leaves_the_originals_key(
    read_only_copy: tuple[Path, Path], config: Path
) -> None:
    """``keys rotate`` on a read-only copy refuses (exit 2, "this log cannot be written")
    before touching the key file it shares with the original: the original signs on with
    its key."""
    original, copy = read_only_copy
    pinned = vkey(original)
    before = files(config)
    refused(rtrace(copy, "keys", "rotate"), "this log cannot be written")
    assert files(config) == before
    record(original, 1)
    assert vkey(original) == pinned
    verifies_with(original, pinned, 3)


# --- rotate needs a log --------------------------------------------------------------------


def test_rotate_needs_an_existing_log_and_init_may_start_one(tmp_path: Path, config: Path) -> None:
    """``keys rotate`` on a folder that does not exist says "no log at" (exit 2) and creates
    neither the folder nor a key; on an existing folder with no key yet it refuses too and
    leaves it empty; ``keys init`` on a new folder starts the log and its key."""
    typo = tmp_path / "lgo"
    refused(rtrace(typo, "keys", "rotate"), f"no log at {typo}", "keys init")
    assert not typo.exists() and files(config) == {}
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(rtrace(empty, "keys", "rotate"), "no signing key yet")
    assert list(empty.iterdir()) == [] and files(config) == {}
    started = ok(rtrace(typo, "keys", "init"))
    assert started.stdout and Checkpoints(typo).origin() is not None


# --- demo logs keep their key to themselves -------------------------------------------------


def test_demo_keeps_its_key_in_its_temporary_folder(tmp_path: Path, config: Path) -> None:
    """``rtrace demo`` without ``--dir`` leaves nothing in the user's config folder (nor at
    ``$REASONING_TRACE_KEY``): its signing key lies beside the demo log, and the demo log
    verifies."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    named = tmp_path / "mine.key"
    env = {"TMPDIR": str(temp), "REASONING_TRACE_KEY": str(named)}
    done = ok(rtrace(None, "demo", "-n", "4", env=env))
    assert files(config) == {} and not named.exists()
    (area,) = list(temp.iterdir())
    assert sorted(p.name for p in area.iterdir() if p.suffix != ".logs") == ["log", "signing.key"]
    assert str(area / "signing.key") in done.stderr
    summary = json.loads(ok(rtrace(area / "log", "verify")).stdout.splitlines()[-1])["summary"]
    assert summary["ok"] is True and summary["records"] == 4


def test_serve_demo_keeps_its_key_in_its_temporary_folder(tmp_path: Path, config: Path) -> None:
    """``rtrace serve --demo`` signs with a key in its temporary folder, never in the user's
    config folder, and removes it with the demo log when stopped."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")
    import httpx

    with serve_demo(tmp_path) as (proc, demo_dir, url):
        deadline = time.monotonic() + 60
        while not httpx.get(f"{url}v1/decisions", timeout=5).json()["decisions"]:
            assert time.monotonic() < deadline, "the demo gate recorded nothing"
            time.sleep(0.05)
        assert (demo_dir.parent / "signing.key").exists()
        assert files(config) == {}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == -signal.SIGTERM
    assert not demo_dir.parent.exists() and files(config) == {}
