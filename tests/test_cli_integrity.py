"""``rtrace`` integrity commands, driven as a real executable: keys, checkpoint, prove, verify."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reasoning_trace.proof_check import verify_inclusion_proof

from .terminal import on_a_terminal

RTRACE = shutil.which("rtrace") or ""


def rtrace(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed rtrace against ``root``."""
    cmd = [RTRACE] if RTRACE else [sys.executable, "-m", "reasoning_trace"]
    return subprocess.run(
        [*cmd, "--dir", str(root), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


@pytest.fixture
def demo_log(root: Path) -> Path:
    """A log with 30 demo decisions, recorded through the CLI."""
    done = rtrace(root, "demo", "-n", "30", "--seed", "1")
    assert done.returncode == 0, done.stderr
    return root


def test_keys_checkpoint_prove_verify(demo_log: Path) -> None:
    """keys show, checkpoint, prove and verify work together and exit 0 on a clean log."""
    vkey = on_a_terminal(demo_log, "keys", "show")
    assert vkey.returncode == 0 and vkey.stdout.count("+") >= 2
    piped = json.loads(rtrace(demo_log, "keys", "show").stdout)
    assert piped["verifier_key"] == vkey.stdout.strip() and piped["current"] is True
    note = rtrace(demo_log, "checkpoint", "--now")
    assert note.returncode == 0 and note.stdout.splitlines()[1] == "30"
    proof = rtrace(demo_log, "prove", "7")
    assert proof.returncode == 0 and len(proof.stdout.splitlines()) == 1  # piped: one line
    line = (next(demo_log.glob("*.jsonl")).read_bytes().splitlines())[7]
    verify_inclusion_proof(json.loads(proof.stdout), line, vkey=vkey.stdout)
    consistency = json.loads(rtrace(demo_log, "prove", "--consistency", "10", "30").stdout)
    assert (consistency["old_size"], consistency["new_size"]) == (10, 30)
    ok = on_a_terminal(demo_log, "verify")
    assert ok.returncode == 0 and "OK: 30 records" in ok.stdout
    summary = json.loads(rtrace(demo_log, "verify").stdout)["summary"]
    assert summary["ok"] is True and summary["records"] == 30


def test_verify_fails_with_exit_1_and_json(demo_log: Path, tmp_path: Path) -> None:
    """A tampered log makes verify exit 1 and name the altered record in --json; the key file
    is what ``rtrace keys show > FILE`` wrote (JSON Lines, piped)."""
    keyfile = tmp_path / "auditor.vkey"
    keyfile.write_text(rtrace(demo_log, "keys", "show").stdout)
    day = next(demo_log.glob("*.jsonl"))
    lines = day.read_bytes().splitlines(keepends=True)
    flipped = {b'"approved":true': b'"approved":false', b'"approved":false': b'"approved":true'}
    for old, new in flipped.items():
        if old in lines[3]:
            lines[3] = lines[3].replace(old, new)
            break
    day.write_bytes(b"".join(lines))
    done = rtrace(demo_log, "verify", "--json", "--vkey", str(keyfile))
    assert done.returncode == 1
    findings = [json.loads(x) for x in done.stdout.splitlines()]
    altered = [f for f in findings if f.get("kind") == "altered"]
    assert altered and altered[0]["seq_from"] == 3 and altered[0]["line"] == 4
    assert findings[-1]["summary"]["ok"] is False


def test_keys_rotate(demo_log: Path) -> None:
    """keys rotate publishes a second key; old checkpoints still verify."""
    assert rtrace(demo_log, "checkpoint", "--now").returncode == 0
    rotated = on_a_terminal(demo_log, "keys", "rotate")
    assert rotated.returncode == 0 and rotated.stdout.startswith("new key: ")
    assert rtrace(demo_log, "demo", "-n", "5").returncode == 0
    shown = on_a_terminal(demo_log, "keys", "show").stdout.splitlines()
    assert len(shown) == 2 and rotated.stdout.split()[-1] == shown[1]
    done = rtrace(demo_log, "verify")
    assert done.returncode == 0, done.stdout


def test_usage_errors_exit_2(demo_log: Path) -> None:
    """Bad usage exits 2 with a message; an unknown decision exits 1."""
    assert rtrace(demo_log, "prove").returncode == 2
    missing = rtrace(demo_log, "prove", "no-such-id")
    assert missing.returncode == 1 and "no decision" in missing.stderr
    assert rtrace(demo_log, "verify", "--vkey", "/nonexistent/file").returncode == 2


def test_trusted_checkpoints_are_refused_where_they_would_not_be_checked(
    demo_log: Path, tmp_path: Path
) -> None:
    """``--trusted`` checks a local log against checkpoints an auditor kept; with ``--replica``
    or ``--source`` it would be silently ignored, so it is refused (exit 2) instead of
    letting the auditor believe a rollback check ran."""
    note = rtrace(demo_log, "checkpoint", "--now").stdout
    kept = tmp_path / "kept.note"
    kept.write_text(note)
    vkey = json.loads(rtrace(demo_log, "keys", "show").stdout)["verifier_key"]
    replica = rtrace(demo_log, "verify", "--replica", "n1", "--trusted", str(kept), "--vkey", vkey)
    assert replica.returncode == 2
    assert "--trusted" in replica.stderr and "Traceback" not in replica.stderr
    source = subprocess.run(
        [
            *([RTRACE] if RTRACE else [sys.executable, "-m", "reasoning_trace"]),
            "--source",
            "nats://127.0.0.1:1",
            "verify",
            "--trusted",
            str(kept),
            "--vkey",
            vkey,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert source.returncode == 2 and "--trusted" in source.stderr
    assert rtrace(demo_log, "verify", "--trusted", str(kept), "--vkey", vkey).returncode == 0
