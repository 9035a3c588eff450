"""What an auditor sees at the edges of the integrity commands, run as real ``rtrace``
processes on real files: a folder that is no log, an emptied log, a checkpoint note that does
not check out, proofs of altered records or of sizes nobody signed, doctored bundles, kept
notes that are no notes, and a day file with a corrupt line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import reasoning_trace
from reasoning_trace.proof_check import verify_inclusion_proof

from .terminal import run_with_pty_stdout

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


def day_file(root: Path) -> Path:
    """The log's one day file."""
    (found,) = root.glob("*.jsonl")
    return found


def lines_of(root: Path) -> list[bytes]:
    """The stored lines of the log's day file."""
    return day_file(root).read_bytes().split(b"\n")[:-1]


def replace_line(root: Path, index: int, new: bytes) -> None:
    """Overwrite one line of the day file on disk (as someone editing the log would)."""
    lines = lines_of(root)
    lines[index] = new
    day_file(root).write_bytes(b"".join(line + b"\n" for line in lines))


def flip_verdict(line: bytes) -> bytes:
    """The same record with its verdict turned."""
    if b'"approved":true' in line:
        return line.replace(b'"approved":true', b'"approved":false')
    return line.replace(b'"approved":false', b'"approved":true')


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


# --- checkpoint: only a checked note is printed ---------------------------------------------


def test_checkpoint_prints_a_note_that_checks_out(
    log5: Path, keyfile: Path, tmp_path: Path
) -> None:
    """On a sound log the note printed is the newest checkpoint, and kept it works as
    ``--trusted`` for verify."""
    done = rtrace(log5, "checkpoint")
    assert done.returncode == 0 and done.stdout.splitlines()[1] == "5"
    assert done.stdout == (log5 / "checkpoint").read_text()
    kept = tmp_path / "kept.note"
    kept.write_text(done.stdout)
    again = rtrace(log5, "verify", "--vkey", str(keyfile), "--trusted", str(kept))
    assert again.returncode == 0, again.stdout


@pytest.mark.parametrize("damage", ["garbage", "root edited", "missing"])
@pytest.mark.parametrize("as_json", [False, True])
def test_checkpoint_refuses_a_note_that_does_not_check_out(
    log5: Path, damage: str, as_json: bool
) -> None:
    """The plain ``checkpoint`` file replaced by garbage, with its root hash edited, or
    deleted: exit 1, the reason on stderr, nothing on stdout to be kept by mistake."""
    plain = log5 / "checkpoint"
    if damage == "garbage":
        plain.write_text("garbage\n")
    elif damage == "root edited":
        lines = plain.read_text().split("\n")
        lines[2] = ("A" if lines[2][0] != "A" else "B") + lines[2][1:]
        plain.write_text("\n".join(lines))
    else:
        plain.unlink()
    done = rtrace(log5, "checkpoint", *(["--json"] if as_json else []))
    assert done.returncode == 1 and done.stdout == ""
    assert str(plain) in done.stderr and "Traceback" not in done.stderr


def test_checkpoint_refuses_a_forged_entry(log5: Path) -> None:
    """The root edited in the checkpoints file and the plain note alike: the signature does
    not verify, so nothing is printed and exit is 1."""
    (cp_file,) = (log5 / "checkpoints").glob("2*.jsonl")
    entry = json.loads(cp_file.read_text())
    lines = entry["note"].split("\n")
    lines[2] = ("A" if lines[2][0] != "A" else "B") + lines[2][1:]
    entry["note"] = "\n".join(lines)
    cp_file.write_text(json.dumps(entry) + "\n")
    (log5 / "checkpoint").write_text(entry["note"])
    done = rtrace(log5, "checkpoint")
    assert done.returncode == 1 and done.stdout == ""
    assert "does not check out" in done.stderr and "bad signature" in done.stderr


# --- prove -----------------------------------------------------------------------------------


def test_prove_in_a_size_nobody_signed_fails(log5: Path) -> None:
    """``prove 2 --size 3`` with checkpoints only of 5: exit 1, no proof printed."""
    done = rtrace(log5, "prove", "2", "--size", "3")
    assert done.returncode == 1 and done.stdout == ""
    assert "no signed checkpoint of size 3" in done.stderr
    signed = rtrace(log5, "prove", "2", "--size", "5")
    assert signed.returncode == 0 and json.loads(signed.stdout)["tree_size"] == 5


def test_prove_of_an_altered_record_fails(log5: Path) -> None:
    """Record 0's bytes changed on disk: ``prove 0`` exits 1 saying it was altered and prints
    nothing; an intact record's proof (from the hashes its writer stored) still verifies
    with only its line, the note and the key."""
    replace_line(log5, 0, flip_verdict(lines_of(log5)[0]))
    altered = rtrace(log5, "prove", "0")
    assert altered.returncode == 1 and altered.stdout == ""
    assert "record 0 does not match the signed checkpoint" in altered.stderr
    assert "altered" in altered.stderr
    intact = rtrace(log5, "prove", "1")
    assert intact.returncode == 0, intact.stderr
    vkey = (log5 / "checkpoints" / "vkey").read_text()
    verify_inclusion_proof(json.loads(intact.stdout), lines_of(log5)[1], vkey=vkey)


@pytest.mark.parametrize(
    "args",
    [
        ("--consistency", "2", "5", "1"),
        ("1", "--consistency", "1", "2"),
        ("--consistency", "1", "2", "--size", "5"),
    ],
)
def test_prove_consistency_with_a_decision_is_refused(log5: Path, args: tuple[str, ...]) -> None:
    """A decision or ``--size`` given with ``--consistency`` would be ignored: bad usage."""
    done = rtrace(log5, "prove", *args)
    assert done.returncode == 2 and done.stdout == ""
    assert "--consistency" in done.stderr and "Traceback" not in done.stderr


def test_a_damaged_checkpoints_file_is_named(log5: Path) -> None:
    """A garbage line appended to ``checkpoints/<day>.jsonl``: ``prove 1`` fails the check
    (exit 1) naming the file and line, not an option that was never given."""
    (cp_file,) = (log5 / "checkpoints").glob("2*.jsonl")
    with open(cp_file, "a") as fh:
        fh.write("garbage\n")
    done = rtrace(log5, "prove", "1")
    assert done.returncode == 1 and done.stdout == ""
    assert f"{cp_file}:2" in done.stderr and "damaged" in done.stderr
    assert "--size" not in done.stderr


# --- bundles ---------------------------------------------------------------------------------


@pytest.fixture
def bundle(log5: Path, tmp_path: Path) -> Path:
    """An audit bundle of the whole log."""
    folder = tmp_path / "bundle"
    done = rtrace(log5, "export", "--bundle", str(folder))
    assert done.returncode == 0, done.stderr
    return folder


def test_a_bundle_repeating_one_record_fails(bundle: Path) -> None:
    """The same record and proof listed 7 times is no bundle of 7 decisions: exit 1."""
    record = (bundle / "records.jsonl").read_bytes().split(b"\n")[0]
    proof = (bundle / "proofs.jsonl").read_bytes().split(b"\n")[0]
    (bundle / "records.jsonl").write_bytes((record + b"\n") * 7)
    (bundle / "proofs.jsonl").write_bytes((proof + b"\n") * 7)
    done = rtrace(None, "verify-bundle", str(bundle))
    assert done.returncode == 1 and "repeats seq 0" in done.stderr
    assert json.loads(done.stdout)["ok"] is False


@pytest.mark.parametrize("where", ["end", "middle"])
def test_a_carriage_return_in_a_bundle_record_is_an_alteration(bundle: Path, where: str) -> None:
    """A ``\\r`` added to a record line (``sed -i '1s/$/\\r/'``) changes the signed bytes:
    the leaf is every byte between two newlines, so verify-bundle exits 1 (altered)."""
    records = bundle / "records.jsonl"
    lines = records.read_bytes().split(b"\n")
    lines[0] = lines[0] + b"\r" if where == "end" else lines[0].replace(b",", b",\r", 1)
    records.write_bytes(b"\n".join(lines))
    done = rtrace(None, "verify-bundle", str(bundle))
    assert done.returncode == 1 and "records.jsonl line 1" in done.stderr
    assert "altered" in done.stderr and "OK" not in done.stdout


def test_export_to_an_empty_path_is_refused(log5: Path, tmp_path: Path) -> None:
    """``export --bundle ''`` would write into the current directory: bad usage, and nothing
    is written there."""
    here = tmp_path / "cwd"
    here.mkdir()
    done = rtrace(log5, "export", "--bundle", "", cwd=here)
    assert done.returncode == 2 and "--bundle" in done.stderr
    assert list(here.iterdir()) == []


def test_export_says_what_it_left_out(log5: Path, tmp_path: Path) -> None:
    """A writer that died before signing left 2 records no checkpoint covers: export writes
    the 5 it can prove and says on stderr (and as ``unsigned``) that 2 more matched, and how
    to sign them."""
    script = (
        "import os\n"
        "from reasoning_trace import DecisionLog\n"
        f"log = DecisionLog({str(log5)!r}, checkpoint_seconds=1e9)\n"
        "for i in range(2):\n"
        "    log.record('later', True, {}, {'i': i})\n"
        "os._exit(0)  # dies before its checkpoint\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=60)
    done = rtrace(log5, "export", "--bundle", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["decisions"], out["unsigned"], out["tree_size"]) == (5, 2, 5)
    assert "2 matching decisions" in done.stderr and "rtrace checkpoint --now" in done.stderr
    assert len((tmp_path / "b" / "records.jsonl").read_bytes().split(b"\n")) == 6


# --- kept notes that are no notes ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["checkpoint --json", "truncated", "/dev/null", "empty"])
@pytest.mark.parametrize("command", ["verify", "verify-bundle"])
def test_a_kept_note_that_is_no_note_is_bad_input(
    log5: Path, bundle: Path, tmp_path: Path, kind: str, command: str
) -> None:
    """``--trusted`` given the ``checkpoint --json`` output, a truncated note, /dev/null or
    an empty file: exit 2 with the reason, not a failed check."""
    note = (log5 / "checkpoint").read_text()
    path = tmp_path / "kept.note"
    if kind == "checkpoint --json":
        path.write_text(rtrace(log5, "checkpoint", "--json").stdout)
    elif kind == "truncated":
        path.write_text(note[:50])
    elif kind == "empty":
        path.write_text("")
    else:
        path = Path("/dev/null")
    where = ["verify"] if command == "verify" else ["verify-bundle", str(bundle)]
    done = rtrace(log5, *where, "--trusted", str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--trusted" in done.stderr and "not a signed checkpoint note" in done.stderr
    assert "Traceback" not in done.stderr
    if kind == "checkpoint --json":
        assert "rtrace checkpoint --json" in done.stderr


def test_a_kept_note_with_a_bad_signature_is_a_failed_check(log5: Path, tmp_path: Path) -> None:
    """A well-formed note whose signature does not verify is not bad input: the check ran
    and failed (exit 1)."""
    lines = (log5 / "checkpoint").read_text().split("\n")
    lines[2] = ("A" if lines[2][0] != "A" else "B") + lines[2][1:]
    kept = tmp_path / "kept.note"
    kept.write_text("\n".join(lines))
    done = rtrace(log5, "verify", "--json", "--trusted", str(kept))
    assert done.returncode == 1 and "bad_checkpoint" in findings(done)[0]


# --- a corrupt line in a day file ------------------------------------------------------------


def test_a_corrupt_line_is_a_failed_check_with_its_place(log5: Path) -> None:
    """Line 3 of the day file replaced by garbage: reading past it (tail, query, stats, show
    of seq 2) fails the check (exit 1) naming file:line; records elsewhere are still shown
    from their own place, and still proven by the hashes their writer stored."""
    intact = lines_of(log5)
    replace_line(log5, 2, b"garbage")
    place = f"{day_file(log5)}:3"
    for args in (("tail",), ("query",), ("stats",), ("show", "2")):
        done = rtrace(log5, *args)
        assert done.returncode == 1, (args, done.stderr)
        assert place in done.stderr and "Traceback" not in done.stderr
    for seq in (0, 4):
        shown = rtrace(log5, "show", str(seq))
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.encode() == intact[seq] + b"\n"
    first_id = json.loads(intact[0])["id"]
    assert rtrace(log5, "show", first_id).stdout.encode() == intact[0] + b"\n"
    proof = rtrace(log5, "prove", "4")
    assert proof.returncode == 0, proof.stderr
    vkey = (log5 / "checkpoints" / "vkey").read_text()
    verify_inclusion_proof(json.loads(proof.stdout), intact[4], vkey=vkey)


def test_a_record_next_to_a_corrupt_line_is_not_called_signed_without_proof(log5: Path) -> None:
    """With the writer's stored hashes gone (.rtrace/ deleted) nothing can prove record 4
    past the corrupt line: a person at a terminal sees it, exit 0, marked NOT VERIFIED with
    the corrupt line's place, never "signed"; ``prove 4`` refuses (exit 1)."""
    replace_line(log5, 2, b"garbage")
    shutil.rmtree(log5 / ".rtrace")
    cmd = [sys.executable, "-m", "reasoning_trace", "--dir", str(log5), "show", "4"]
    env = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "400", "NO_COLOR": "1"}
    out, err, code = run_with_pty_stdout(cmd, env, None, 120)
    text = out.decode().replace("\r\n", "\n")
    assert code == 0, err.decode()
    assert "NOT VERIFIED" in text and f"{day_file(log5)}:3" in text
    assert "signed:" not in text
    proof = rtrace(log5, "prove", "4")
    assert proof.returncode == 1 and proof.stdout == ""
