"""The auditor's side: reading never writes, only verified bytes are shown as signed, verify
fails closed, a kept checkpoint catches a rollback, odd files are findings, not tracebacks."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from reasoning_trace import DecisionLog
from reasoning_trace.attest import attest
from reasoning_trace.verify import verify

from .terminal import on_a_terminal
from .test_cli_integrity import rtrace


def everything(root: Path) -> dict[str, bytes]:
    """Every file under a root, derived ones included, with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def written(tmp_path: Path, signing_key: Path) -> Path:
    """A log of 30 decisions over a writer's life, with its .rtrace/ and checkpoints."""
    root = tmp_path / "log"
    with DecisionLog(str(root), checkpoint_every=8) as log:
        for i in range(30):
            log.record("gate", i % 4 != 0, {"safety": {"passed": i % 4 != 0}}, {"i": i}, f"r{i}")
    return root


def reading_commands(root: Path, out: Path) -> list[list[str]]:
    """Every reading command, with arguments that make it do its work."""
    first = json.loads(rtrace(root, "tail", "-n", "1", "--json").stdout)["id"]
    return [
        ["tail", "-n", "5"],
        ["tail", "-n", "5", "--json"],
        ["show", "3"],
        ["show", first],
        ["query", "--action", "gate", "--format", "json"],
        ["query", "--rejected"],
        ["stats"],
        ["prove", "3"],
        ["prove", "--consistency", "8", "24"],
        ["checkpoint"],
        ["verify"],
        ["export", "--bundle", str(out / "bundle")],
        ["adopt"],
        ["doctor"],
    ]


def run_all(root: Path, out: Path, env: dict[str, str]) -> list[tuple[int, str]]:
    """(exit code, output with the root's path replaced) of every reading command."""
    results = []
    for cmd in reading_commands(root, out):
        done = rtrace(root, *cmd, env=env)
        assert "Traceback" not in done.stderr, (cmd, done.stderr)
        text = (done.stdout + done.stderr).replace(str(root), "<root>")
        results.append((done.returncode, text))
    return results


def test_reading_never_writes_nor_creates_a_key(written: Path, tmp_path: Path) -> None:
    """Every reading command, on a log with and without its derived files: no file under the
    root is created, changed or removed, and no signing key is made."""
    new_key = tmp_path / "auditor" / "would-be.key"
    env = {"REASONING_TRACE_KEY": str(new_key), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for case in ("with .rtrace", "without .rtrace"):
        if case == "without .rtrace":
            shutil.rmtree(written / ".rtrace")
        before = everything(written)
        out = tmp_path / case.replace(" ", "_")
        out.mkdir()
        codes = [code for code, _ in run_all(written, out, env)]
        # doctor, last, says the writer's key is missing here: that is this machine's set-up
        assert codes[:-1] == [0] * (len(codes) - 1), codes
        assert everything(written) == before, case
        assert not new_key.exists()


@pytest.fixture
def read_only(written: Path, tmp_path: Path) -> Iterator[Path]:
    """The log on a read-only bind mount (needs root; CI runs as root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only bind mount needs root (CI runs as root)")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "--bind", str(written), str(mnt)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)], check=True)
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_read_only_copy_answers_as_the_original(
    written: Path, read_only: Path, tmp_path: Path
) -> None:
    """On a read-only bind mount every reading command gives the original's answers, with
    and without .rtrace/ (the reader keeps derived state in its own cache)."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    original = run_all(written, tmp_path / "a", env)
    copy = run_all(read_only, tmp_path / "b", env)
    fix = [(c, t.replace(str(tmp_path / "b"), str(tmp_path / "a"))) for c, t in copy]
    assert [c for c, _ in fix[:-1]] == [0] * (len(fix) - 1)
    assert fix[:-1] == original[:-1]  # doctor differs: the copy's root is not writable
    shutil.rmtree(written / ".rtrace")
    (tmp_path / "c").mkdir()
    again = run_all(read_only, tmp_path / "c", env)
    assert [c for c, _ in again][:-1] == [0] * (len(again) - 1)


def test_a_copy_owned_by_another_user(written: Path, tmp_path: Path) -> None:
    """An auditor who cannot write the log (another user's files) reads it all the same."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("switching to another user needs root and setpriv (CI runs as root)")
    place = Path(tempfile.mkdtemp(prefix="rtrace-audit-"))  # outside pytest's private folder
    os.chmod(place, 0o755)
    copy = place / "copy"
    shutil.copytree(written, copy)
    for p in [copy, *copy.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    home = place / "auditor-home"
    home.mkdir()
    os.chown(home, 65534, 65534)
    before = everything(copy)
    # Another user who may read anything (as an auditor's read access) but write nothing of it.
    base = [
        *("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"),
        *("--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", "--"),
    ]
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache")}
    env["REASONING_TRACE_KEY"] = str(home / "key")
    rtrace_cmd = shutil.which("rtrace") or "rtrace"
    for cmd in (
        ["verify"],
        ["show", "3"],
        ["query", "--format", "json"],
        ["stats"],
        ["prove", "3"],
    ):
        done = subprocess.run(
            [*base, rtrace_cmd, "--dir", str(copy), *cmd],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, (cmd, done.stderr)
        assert "Traceback" not in done.stderr
    assert everything(copy) == before
    shutil.rmtree(place)


def forge_index(path: Path) -> None:
    """Point every row of an index at a file outside the log."""
    db = sqlite3.connect(path)
    db.execute("UPDATE records SET day = '../evil/x'")
    db.commit()
    db.close()


def test_a_forged_index_never_changes_what_readers_return(written: Path, tmp_path: Path) -> None:
    """Index rows edited to point outside the log (in the writer's .rtrace/ and in a reader's
    cache), a stale index and another log's index: readers return the log's own records."""
    evil = tmp_path / "evil"
    evil.mkdir()
    forged_line = b'{"action":"forged","approved":true,"seq":3}\n' * 10
    (evil / "x.jsonl").write_bytes(forged_line)
    with DecisionLog(str(written)) as log:
        log.record("after", True, {}, {})  # a writer: its index is .rtrace/index.sqlite
        genuine = log.get(3)
        forge_index(written / ".rtrace" / "index.sqlite")
        assert log.get(3) == genuine
        assert log.get(genuine.id).line == genuine.line
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    expected = rtrace(written, "query", "--format", "json", env=env).stdout
    assert "forged" not in expected and len(expected.splitlines()) == 31
    cache = (tmp_path / "cache") / "reasoning-trace" / "logs"
    for index in cache.rglob("index.sqlite"):
        forge_index(index)
    assert rtrace(written, "query", "--format", "json", env=env).stdout == expected
    shown = rtrace(written, "show", genuine.id, env=env)
    assert shown.returncode == 0 and "forged" not in shown.stdout
    # Another log's index in this log's place.
    other = tmp_path / "other"
    with DecisionLog(str(other)) as log:
        for i in range(40):
            log.record("other", True, {}, {"j": i})
        log.get(7)  # a writer's lookup builds its index under .rtrace/
    shutil.copy(other / ".rtrace" / "index.sqlite", written / ".rtrace" / "index.sqlite")
    with DecisionLog(str(written)) as log:
        log.record("more", True, {}, {})
        assert [d.action for d in log.query(log_filter("gate"))] == ["gate"] * 30


def log_filter(action: str):  # type: ignore[no-untyped-def]
    """A filter by action."""
    from reasoning_trace.query import Filter

    return Filter.build(action=action)


def test_signed_is_shown_only_for_verified_bytes(written: Path) -> None:
    """show says signed for an untouched record, ALTERED (exit 1) for one edited on disk, not
    yet signed for a fresh one; the library's attestation says the same."""
    with DecisionLog(str(written), checkpoint_every=0) as log:
        fresh = log.record("fresh", True, {}, {})
        log._store.tree = None  # type: ignore[attr-defined]  # leave it unsigned on close
    assert "not yet signed" in on_a_terminal(written, "show", str(fresh.seq)).stdout
    ok = on_a_terminal(written, "show", "5")
    assert ok.returncode == 0 and "signed:" in ok.stdout and "ALTERED" not in ok.stdout
    day = sorted(written.glob("*.jsonl"))[-1]
    day.write_bytes(day.read_bytes().replace(b'"reason":"r5"', b'"reason":"r9"'))
    shown = on_a_terminal(written, "show", "5")
    assert shown.returncode == 1 and "ALTERED" in shown.stdout
    piped = rtrace(written, "show", "5")  # the stored line, and still exit 1
    assert piped.returncode == 1 and '"reason":"r9"' in piped.stdout and "altered" in piped.stderr
    with DecisionLog(str(written)) as log:
        assert attest(log, log.get(5)).status == "altered"
        assert attest(log, log.get(6)).status == "verified"


def test_a_log_cut_short_of_its_checkpoint_proves_nothing_and_says_why(written: Path) -> None:
    """Records cut from the end of a log its newest checkpoint covers: a proof in that
    checkpoint is refused with the sizes (no traceback), show says NOT VERIFIED, and the API's
    attestation says unverified."""
    day = sorted(written.glob("*.jsonl"))[-1]
    day.write_bytes(b"".join(day.read_bytes().splitlines(keepends=True)[:10]))
    proved = rtrace(written, "prove", "3")
    assert proved.returncode != 0 and "Traceback" not in proved.stderr
    assert "holds 10 records" in proved.stderr and "covers 30" in proved.stderr
    shown = on_a_terminal(written, "show", "3")
    assert "Traceback" not in shown.stderr and "NOT VERIFIED" in shown.stdout
    with DecisionLog(str(written), create=False) as log:
        assert attest(log, log.get(3)).status == "unverified"


def test_hashes_rebuilt_from_edited_day_files_never_vouch_for_a_record(written: Path) -> None:
    """A signed record edited on disk, .rtrace/ deleted (it is derived) and a writer that then
    records (rebuilding the stored hashes from the edited day files): show never says the
    record's bytes are as written, and exits 1, from the CLI and from the library."""
    day = sorted(written.glob("*.jsonl"))[-1]
    day.write_bytes(day.read_bytes().replace(b'"reason":"r5"', b'"reason":"r9"'))
    shutil.rmtree(written / ".rtrace")
    with DecisionLog(str(written)) as log:
        log.record("after", True, {}, {})
    shown = on_a_terminal(written, "show", "5")
    assert shown.returncode == 1, shown.stdout
    assert "as written" not in shown.stdout and "signed:" not in shown.stdout
    with DecisionLog(str(written)) as log:
        said = attest(log, log.get(5))
    assert said.status != "verified" and "as written" not in said.detail


def test_a_log_shorter_than_its_checkpoint_is_a_clear_failure_to_readers(written: Path) -> None:
    """The newest records cut from the day file after the checkpoint that covers them: show,
    prove and export say so and exit 1, with no traceback."""
    day = sorted(written.glob("*.jsonl"))[-1]
    day.write_bytes(b"".join(day.read_bytes().splitlines(keepends=True)[:-2]))
    for cmd in (["show", "3"], ["prove", "3"], ["export", "--bundle", str(written.parent / "b")]):
        done = rtrace(written, *cmd)
        assert done.returncode == 1, (cmd, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, (cmd, done.stderr)
        assert "fewer than the 30" in done.stdout + done.stderr, cmd


def test_verify_with_a_pinned_key_fails_closed(written: Path) -> None:
    """The issue's case: checkpoints and derived files deleted, a record altered: verify with
    the auditor's pinned key fails instead of saying OK."""
    vkey = (written / "checkpoints" / "vkey").read_text().strip()
    shutil.rmtree(written / "checkpoints")
    (written / "checkpoint").unlink()
    shutil.rmtree(written / ".rtrace")
    day = sorted(written.glob("*.jsonl"))[-1]
    day.write_bytes(day.read_bytes().replace(b'"reason":"r5"', b'"reason":"r9"'))
    done = rtrace(written, "verify", "--vkey", vkey)
    assert done.returncode == 1 and "no_checkpoint" in done.stdout
    assert "no_checkpoint" in verify(written, vkey).kinds()


def test_records_a_writer_would_have_signed_fail(tmp_path: Path) -> None:
    """Records of a day that ended, with records of a later day after them, that no checkpoint
    covers (their checkpoints deleted) fail; a fresh unsigned tail is only a note."""
    root = tmp_path / "log"
    now = [1_800_000_000 * 10**9]
    with DecisionLog(str(root), sync="never", clock=lambda: now[0]) as log:
        for _ in range(5):
            log.record("a", True, {}, {})
        now[0] += 86_400 * 10**9
        for _ in range(5):
            log.record("b", True, {}, {})
    assert verify(root).ok
    with DecisionLog(str(root), sync="never", clock=lambda: now[0], checkpoint_every=0) as log:
        log.record("c", True, {}, {})
        log._store.tree = None  # type: ignore[attr-defined]
    report = verify(root)
    assert report.ok and "unsigned" in report.kinds()
    for cp in (root / "checkpoints").glob("2*.jsonl"):
        cp.unlink()
    report = verify(root)
    assert not report.ok and "unsigned_stale" in report.kinds()


def test_a_rollback_is_caught_with_a_kept_checkpoint(written: Path, tmp_path: Path) -> None:
    """The auditor keeps a checkpoint; the host deletes its newest records and the checkpoints
    that covered them (a rollback to a checkpoint boundary): verify alone cannot tell, verify
    --trusted fails; a rewrite at the same size is caught too."""
    kept = tmp_path / "kept.note"
    done = rtrace(written, "checkpoint")
    kept.write_text(done.stdout)
    size = int(done.stdout.split("\n")[1])
    assert size == 30
    # Roll back to the checkpoint of 24 records: drop the newer lines and checkpoint entries.
    day = sorted(written.glob("*.jsonl"))[-1]
    lines = day.read_bytes().splitlines(keepends=True)
    day.write_bytes(b"".join(lines[:24]))
    cp_file = sorted((written / "checkpoints").glob("2*.jsonl"))[-1]
    entries = [
        e for e in cp_file.read_bytes().splitlines(keepends=True) if json.loads(e)["size"] <= 24
    ]
    cp_file.write_bytes(b"".join(entries))
    (written / "checkpoint").write_text(json.loads(entries[-1])["note"])
    shutil.rmtree(written / ".rtrace")
    assert rtrace(written, "verify").returncode == 0  # what one host cannot prove alone
    caught = rtrace(written, "verify", "--trusted", str(kept))
    assert caught.returncode == 1 and "rollback" in caught.stdout


def test_odd_files_are_findings_not_tracebacks(written: Path, tmp_path: Path) -> None:
    """A directory named like a day file, invalid UTF-8 and a torn line in checkpoint files:
    every reading command answers without a traceback; verify reports what it found."""
    (written / "2030-01-01.jsonl").mkdir()
    cp_file = sorted((written / "checkpoints").glob("2*.jsonl"))[-1]
    with open(cp_file, "ab") as fh:
        fh.write(b'{"size": 3, "note": "\xff\xfe"}\n{"size": 4, "no')
    (tmp_path / "out").mkdir()
    for _code, text in run_all(written, tmp_path / "out", {}):
        assert "Traceback" not in text
    done = rtrace(written, "verify", "--json")
    assert done.returncode == 1
    kinds = {json.loads(x).get("kind") for x in done.stdout.splitlines()}
    assert {"bad_checkpoint", "torn_tail"} <= kinds


def test_index_rows_never_supply_content(written: Path, tmp_path: Path, signing_key: Path) -> None:
    """Rows pointing inside another line, verdict columns flipped, vetoes or rows deleted: the
    reader's answers (query, stats, show) stay those of the day files."""
    with DecisionLog(str(written)) as log:
        forged = log.get(5).line.replace(b'"reason":"r5"', b'"reason":"FORGED"')
        carrier = log.record("halt", True, {}, {"payload": forged.decode()})
    expected = {
        cmd: rtrace(written, *cmd).stdout
        for cmd in (("query", "--format", "json"), ("stats", "--json"), ("show", "5"))
    }
    index = next(signing_key.parent.glob("cache/reasoning-trace/logs/*/index.sqlite"))
    day = sorted(written.glob("*.jsonl"))[-1]
    line_start = day.read_bytes().index(carrier.line)
    db = sqlite3.connect(index)
    db.execute(
        "UPDATE records SET day=?, offset=?, length=? WHERE seq=5",
        (day.stem, line_start + 10, 40),
    )
    db.execute("UPDATE records SET approved = 1 - approved")
    db.execute("DELETE FROM vetoes")
    db.execute("DELETE FROM records WHERE seq = 7")
    db.commit()
    db.close()
    for cmd, out in expected.items():
        assert rtrace(written, *cmd).stdout == out, cmd


def test_one_bad_checkpoint_line_hides_nothing_after_it(written: Path) -> None:
    """A malformed line in an older checkpoint file is a finding; the checkpoints after it
    still count."""
    first = sorted((written / "checkpoints").glob("2*.jsonl"))[0]
    lines = first.read_bytes().splitlines(keepends=True)
    first.write_bytes(lines[0] + b'\xff\xfe{"size":3\n' + b"".join(lines[1:]))
    report = verify(written)
    assert "bad_checkpoint" in report.kinds()
    assert report.signed_size == 30 and "unsigned_stale" not in report.kinds()


def test_a_directory_named_like_a_day_file_is_a_finding(written: Path) -> None:
    """Something named like a day file that is not a file is reported, not skipped silently."""
    (written / "2030-01-01.jsonl").mkdir()
    report = verify(written)
    assert not report.ok and "odd_entry" in report.kinds()


@pytest.fixture
def bundle(written: Path, tmp_path: Path) -> Path:
    """An exported audit bundle of the log."""
    folder = tmp_path / "bundle"
    done = rtrace(written, "export", "--bundle", str(folder))
    assert done.returncode == 0, done.stderr
    return folder


@pytest.mark.parametrize(
    "damage",
    ["no proofs", "no records", "no vkey", "proofs not json", "proofs not utf-8", "empty"],
)
def test_a_damaged_bundle_is_a_clear_failure(bundle: Path, damage: str) -> None:
    """A bundle with a file missing, a proofs file that is not JSON or no records at all fails
    with exit 1 and a message naming what is wrong, never a traceback or "OK: 0"."""
    if damage == "no proofs":
        (bundle / "proofs.jsonl").unlink()
    elif damage == "no records":
        (bundle / "records.jsonl").unlink()
    elif damage == "no vkey":
        (bundle / "vkey").unlink()
    elif damage == "proofs not json":
        _first, *rest = (bundle / "proofs.jsonl").read_bytes().splitlines(keepends=True)
        (bundle / "proofs.jsonl").write_bytes(b"not json\n" + b"".join(rest))
    elif damage == "proofs not utf-8":
        (bundle / "proofs.jsonl").write_bytes(b"\xff\xfe\n" * 30)
    else:
        (bundle / "proofs.jsonl").write_bytes(b"")
        (bundle / "records.jsonl").write_bytes(b"")
    done = rtrace(bundle, "verify-bundle", str(bundle))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "OK" not in done.stdout
    named = {"no proofs": "proofs.jsonl", "no records": "records.jsonl", "no vkey": "vkey"}
    assert named.get(damage, "") in done.stderr


def test_verify_bundle_with_a_kept_checkpoint(bundle: Path, written: Path, tmp_path: Path) -> None:
    """verify-bundle --trusted: a bundle older than a checkpoint the auditor kept fails."""
    with DecisionLog(str(written)) as log:
        for _ in range(5):
            log.record("later", True, {}, {})
        note = log.checkpoint()
    kept = tmp_path / "kept.note"
    kept.write_text(note)
    vkey = (written / "checkpoints" / "vkey").read_text().splitlines()[-1]
    done = rtrace(bundle, "verify-bundle", str(bundle), "--vkey", vkey, "--trusted", str(kept))
    assert done.returncode == 1 and "rollback" in done.stderr
    fine = rtrace(bundle, "verify-bundle", str(bundle), "--vkey", vkey)
    assert fine.returncode == 0, fine.stderr
