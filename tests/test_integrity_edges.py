"""What an auditor sees at the edges of the integrity commands, run as real ``rtrace``
processes on real files: a folder that is no log, an emptied log."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import reasoning_trace

#: The source tree of the package under test: subprocesses import it, not an installed copy.
SRC = str(Path(reasoning_trace.__file__).resolve().parents[1])


def rtrace(
    root: Path | None, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``rtrace [--dir root] args`` from this source tree, stdout piped."""
    cmd = [sys.executable, "-m", "reasoning_trace"]
    return subprocess.run(
        [*cmd, *(["--dir", str(root)] if root is not None else []), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
        cwd=cwd,
        timeout=120,
    )


def findings(done: subprocess.CompletedProcess[str]) -> tuple[set[str], dict[str, object]]:
    """The kinds of finding ``verify --json`` printed, and its summary."""
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    return {r["kind"] for r in rows if "kind" in r}, rows[-1]["summary"]


@pytest.fixture
def log5(tmp_path: Path) -> Path:
    """A log of 5 decisions recorded by ``rtrace demo``, signed when its writer closed."""
    root = tmp_path / "log"
    done = rtrace(root, "demo", "-n", "5", "--seed", "1")
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture
def keyfile(log5: Path, tmp_path: Path) -> Path:
    """The auditor's copy of the log's verifier key (``rtrace keys show > auditor.vkey``)."""
    path = tmp_path / "auditor.vkey"
    path.write_text(rtrace(log5, "keys", "show").stdout)
    return path


# --- verify: no log, an emptied log, fail closed ------------------------------------------------


def test_verify_of_a_folder_that_is_no_log_fails(keyfile: Path, tmp_path: Path) -> None:
    """A folder of other files, and an empty folder, are not logs: verify exits 1 with a
    ``not_a_log`` finding, with and without the auditor's key, never "OK: 0 records"."""
    other = tmp_path / "share"
    (other / "doc").mkdir(parents=True)
    (other / "doc" / "README").write_text("not a log\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (other, empty):
        for extra in ((), ("--vkey", str(keyfile))):
            done = rtrace(folder, "verify", "--json", *extra)
            kinds, summary = findings(done)
            assert done.returncode == 1, done.stdout
            assert kinds == {"not_a_log"} and summary["ok"] is False
            assert "is not a log" in done.stdout and "Traceback" not in done.stderr


def test_an_emptied_log_fails_verify(log5: Path, keyfile: Path) -> None:
    """``rm -rf log/*`` leaves .rtrace/ (its writers' head says 5 records were stored): verify
    fails without a key (``acknowledged_missing``) and with the pinned key (``no_checkpoint``
    too); with .rtrace/ gone as well the folder is no log at all."""
    for entry in log5.iterdir():
        if entry.name != ".rtrace":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    alone = rtrace(log5, "verify", "--json")
    kinds, summary = findings(alone)
    assert alone.returncode == 1 and kinds == {"acknowledged_missing"}
    assert summary["records"] == 0 and "stored 5" in alone.stdout
    pinned = rtrace(log5, "verify", "--json", "--vkey", str(keyfile))
    kinds, _ = findings(pinned)
    assert pinned.returncode == 1 and kinds == {"acknowledged_missing", "no_checkpoint"}
    shutil.rmtree(log5 / ".rtrace")
    gone = rtrace(log5, "verify", "--json", "--vkey", str(keyfile))
    assert gone.returncode == 1 and findings(gone)[0] == {"not_a_log"}


def test_a_created_log_with_no_record_yet(tmp_path: Path, keyfile: Path) -> None:
    """A log created with ``keys init`` and no record: verify without a key says OK with 0
    records; with a pinned key it fails closed, as no checkpoint proves anything."""
    root = tmp_path / "new"
    assert rtrace(root, "keys", "init").returncode == 0
    fine = rtrace(root, "verify", "--json")
    kinds, summary = findings(fine)
    assert fine.returncode == 0 and kinds == set() and summary["records"] == 0
    pinned = rtrace(root, "verify", "--json", "--vkey", str(keyfile))
    assert pinned.returncode == 1 and findings(pinned)[0] == {"no_checkpoint"}


def test_a_pinned_key_with_records_and_no_checkpoint_still_fails(log5: Path, keyfile: Path) -> None:
    """The records are there but every checkpoint was deleted: the pinned key fails it."""
    shutil.rmtree(log5 / "checkpoints")
    (log5 / "checkpoint").unlink()
    done = rtrace(log5, "verify", "--json", "--vkey", str(keyfile))
    assert done.returncode == 1 and "no_checkpoint" in findings(done)[0]
