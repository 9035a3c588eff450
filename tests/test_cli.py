"""``rtrace`` driven as a real executable: every command and filter, a pty for ``tail -f``."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .fake_clock import HERE as CLOCK_HERE
from .fake_clock import FakeClock, needs_fake_clock
from .terminal import on_a_terminal as words_on_a_terminal
from .test_cli_integrity import rtrace
from .test_faults import Lines


@pytest.fixture
def demo_log(root: Path) -> Path:
    """60 demo decisions plus one hand-made rollback vetoed by safety."""
    assert rtrace(root, "demo", "-n", "60", "--seed", "4").returncode == 0
    done = rtrace(
        root,
        "record",
        "--action",
        "rollback",
        "--rejected",
        "--vote",
        "safety=fail:too risky",
        "--vote",
        "cost=pass",
        "--subject",
        "agent_id=a9",
        "--reason",
        "vetoed",
    )
    assert done.returncode == 0, done.stderr
    return root


def lines(done: subprocess.CompletedProcess[str]) -> list[dict]:
    """JSON Lines output as dicts."""
    return [json.loads(x) for x in done.stdout.splitlines()]


def test_record_from_flags_and_stdin(root: Path) -> None:
    """record stores from flags or a JSON object on stdin and prints the stored record."""
    done = rtrace(
        root,
        "record",
        "--action",
        "halt",
        "--approved",
        "--vote",
        "ops=pass:ok",
        "--subject",
        "agent_id=a1",
        "--id",
        "req-1",
    )
    stored = json.loads(done.stdout)
    assert stored["votes"] == {"ops": {"passed": True, "reason": "ok"}} and stored["seq"] == 0
    again = rtrace(
        root,
        "record",
        "--action",
        "halt",
        "--approved",
        "--vote",
        "ops=pass:ok",
        "--subject",
        "agent_id=a1",
        "--id",
        "req-1",
    )
    assert json.loads(again.stdout)["seq"] == 0  # an idempotent retry
    piped = subprocess.run(
        [shutil.which("rtrace") or "rtrace", "--dir", str(root), "record", "--json", "-"],
        input='{"action": "upgrade", "approved": false, "subject": {"v": 2}}',
        capture_output=True,
        text=True,
    )
    assert piped.returncode == 0 and json.loads(piped.stdout)["subject"] == {"v": 2}


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["record", "--action", "x", "--approved", "--subject", "novalue"], 2, "KEY=VALUE"),
        (["record", "--action", "x", "--approved", "--vote", "a=maybe"], 2, "pass|fail"),
        (["record", "--action", "x"], 2, "--approved or --rejected"),
        (["record", "--action", "x", "--approved", "--id", "bad id"], 2, "id: "),
        (["query", "--since", "yesterday-ish"], 2, "not a time"),
        (["query", "--subject", "novalue"], 2, "KEY=VALUE"),
        (["stats", "--since", "2026-01-02", "--until", "2026-01-01"], 2, "empty time range"),
        (["show", "999"], 1, "no decision"),
        (["show", "no-such-id"], 1, "no decision"),
        (["nonsense"], 2, "No such command"),
    ],
)
def test_bad_input_exits_with_a_helpful_message(
    demo_log: Path, args: list[str], code: int, words: str
) -> None:
    """Malformed arguments exit 2 and unknown decisions exit 1, with a message on stderr."""
    done = rtrace(demo_log, *args)
    assert done.returncode == code and words in done.stderr and "Traceback" not in done.stderr


def test_conflicting_retry_exits_2(root: Path) -> None:
    """Reusing a caller id with other content is refused."""
    assert rtrace(root, "record", "--action", "a", "--approved", "--id", "x1").returncode == 0
    done = rtrace(root, "record", "--action", "a", "--rejected", "--id", "x1")
    assert done.returncode == 2 and "already recorded" in done.stderr


def test_query_filters(demo_log: Path) -> None:
    """Every query filter narrows the answer as the library does."""
    every = lines(rtrace(demo_log, "query", "--format", "json"))
    assert [r["seq"] for r in every] == list(range(61))

    def seqs(*args: str) -> list[int]:
        return [r["seq"] for r in lines(rtrace(demo_log, "query", "--format", "json", *args))]

    assert seqs("--action", "rollback") == [r["seq"] for r in every if r["action"] == "rollback"]
    assert seqs("--rejected") == [r["seq"] for r in every if not r["approved"]]
    assert seqs("--approved") == [r["seq"] for r in every if r["approved"]]
    vetoed = [r["seq"] for r in every if r["votes"].get("safety", {}).get("passed") is False]
    assert seqs("--voter", "safety") == vetoed and 60 in vetoed
    assert seqs("--subject", "agent_id=a9") == [60]
    assert seqs("--since", "1h") == list(range(61)) and seqs("--until", "2000-01-01") == []
    assert seqs("--limit", "3") == [58, 59, 60]
    table = rtrace(demo_log, "query", "--action", "rollback", "--format", "table").stdout
    assert "REJECTED" in table and "seq" in table
    rows = list(
        csv.DictReader(
            io.StringIO(
                rtrace(demo_log, "query", "--subject", "agent_id=a9", "--format", "csv").stdout
            )
        )
    )
    assert rows[0]["vetoed_by"] == "safety" and rows[0]["approved"] == "False"


def test_show_and_stats(demo_log: Path) -> None:
    """show explains a decision with its votes and signature; stats adds up."""
    shown = words_on_a_terminal(demo_log, "show", "60")
    assert shown.returncode == 0
    for words in ("REJECTED", "safety", "FAIL", "too risky", "agent_id", "signed"):
        assert words in shown.stdout
    stats = json.loads(rtrace(demo_log, "stats", "--json").stdout)
    every = lines(rtrace(demo_log, "query", "--format", "json"))
    assert stats["total"] == 61 and stats["approved"] == sum(r["approved"] for r in every)
    by_voter = {v["voter"]: v["vetoes"] for v in stats["vetoes"]}
    assert by_voter["safety"] == sum(
        1 for r in every if r["votes"].get("safety", {}).get("passed") is False
    )
    narrow = json.loads(rtrace(demo_log, "stats", "--json", "--action", "rollback").stdout)
    assert {a["action"] for a in narrow["actions"]} == {"rollback"}
    assert "approval rate" in words_on_a_terminal(demo_log, "stats").stdout
    assert json.loads(rtrace(demo_log, "stats").stdout) == stats  # piped: the JSON object


def test_export_bundle_and_verify_bundle(demo_log: Path, tmp_path: Path) -> None:
    """export writes records, proofs, checkpoint and vkey; verify-bundle checks them offline."""
    bundle = tmp_path / "bundle"
    done = rtrace(demo_log, "export", "--action", "rollback", "--bundle", str(bundle))
    assert done.returncode == 0, done.stderr
    assert {p.name for p in bundle.iterdir()} == {
        "records.jsonl",
        "proofs.jsonl",
        "checkpoint",
        "vkey",
    }
    shutil.rmtree(demo_log)  # the auditor has no log
    checked = words_on_a_terminal(tmp_path / "nowhere", "verify-bundle", str(bundle))
    assert checked.returncode == 0 and checked.stdout.startswith("OK: ")
    piped = rtrace(tmp_path / "nowhere", "verify-bundle", str(bundle))
    assert json.loads(piped.stdout)["ok"] is True
    records = (bundle / "records.jsonl").read_bytes().splitlines(keepends=True)
    records[0] = records[0].replace(b'"rollback"', b'"halt"')
    (bundle / "records.jsonl").write_bytes(b"".join(records))
    bad = rtrace(tmp_path / "nowhere", "verify-bundle", str(bundle))
    assert bad.returncode == 1 and "line 1" in bad.stderr
    assert json.loads(bad.stdout)["ok"] is False


def test_verify_bundle_refuses_hostile_notes(demo_log: Path, tmp_path: Path) -> None:
    """A bundle's note with invalid UTF-8, CRLF or 101 signatures is refused, no traceback."""
    bundle = tmp_path / "bundle"
    assert rtrace(demo_log, "export", "--bundle", str(bundle)).returncode == 0
    good = (bundle / "checkpoint").read_bytes()
    text, _, sig = good.rpartition(b"\n\n")
    hostile = {
        b"not valid UTF-8": good.replace(b"\n", b"\xb2\n", 1),
        b"U+000D": good.replace(b"\n", b"\r\n"),
        b"over the limit of 100": text + b"\n\n" + sig * 101,
    }
    for words, note in hostile.items():
        (bundle / "checkpoint").write_bytes(note)
        done = rtrace(tmp_path / "nowhere", "verify-bundle", str(bundle))
        assert done.returncode == 1 and words.decode() in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_a_damaged_checkpoint_copy_is_no_traceback(demo_log: Path) -> None:
    """Invalid UTF-8 in <root>/checkpoint: ``checkpoint`` prints nothing that was not checked
    (exit 1, the file named); the other commands read checkpoints/ and keep working."""
    assert rtrace(demo_log, "checkpoint", "--now").returncode == 0
    good = rtrace(demo_log, "checkpoint").stdout
    (demo_log / "checkpoint").write_bytes(good.encode().replace(b"\n", b"\xb2\r\n", 1))
    damaged = rtrace(demo_log, "checkpoint")
    assert damaged.returncode == 1 and damaged.stdout == ""
    assert str(demo_log / "checkpoint") in damaged.stderr and "Traceback" not in damaged.stderr
    for args in (("tail", "-n", "1"), ("verify",), ("record", "--action", "a", "--approved")):
        done = rtrace(demo_log, *args)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stderr)


def test_verify_bundle_opens_its_note_once(root: Path, tmp_path: Path) -> None:
    """A 501-record bundle whose note has 100 signature lines opens (and checks) it once."""
    from reasoning_trace import DecisionLog, note
    from reasoning_trace.bundle import export_bundle, verify_bundle
    from reasoning_trace.query import Filter

    with DecisionLog(str(root), sync="never") as log:
        for i in range(501):
            log.record("a", True, {}, {"i": i})
        log.checkpoint()  # export proves against a signed checkpoint; it never signs
        export_bundle(log, Filter(), tmp_path / "bundle")
    path = tmp_path / "bundle" / "checkpoint"
    text, _, sig = path.read_bytes().rpartition(b"\n\n")
    path.write_bytes(text + b"\n\n" + sig * 100)
    calls = []

    def profile(frame: object, event: str, arg: object) -> None:
        code = getattr(frame, "f_code", None)
        if event == "call" and code in (note.open_note.__code__, note.split_note.__code__):
            calls.append(code)

    sys.setprofile(profile)
    try:
        count, checkpoint = verify_bundle(tmp_path / "bundle")
    finally:
        sys.setprofile(None)
    assert (count, checkpoint.size) == (501, 501)
    assert len(calls) == 2  # open_note once, which splits the note once


def read_until(fd: int, wanted: bytes, seconds: float) -> bytes:
    """Read from a pty until ``wanted`` appears or the time is up."""
    out = b""
    deadline = time.monotonic() + seconds
    while wanted not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    return out


def test_tail_follow_on_a_terminal_and_ctrl_c(demo_log: Path) -> None:
    """tail -f on a pty shows another process's record within 1 s; Ctrl-C exits 0 cleanly."""
    cmd = [shutil.which("rtrace") or "rtrace", "--dir", str(demo_log), "tail", "-n", "2", "-f"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: rtrace on the pty
        os.execvpe(cmd[0], cmd, {**os.environ, "COLUMNS": "200"})
    try:
        assert b"vetoed" in read_until(fd, b"vetoed", 20)
        done = rtrace(demo_log, "record", "--action", "from-elsewhere", "--approved")
        assert done.returncode == 0
        assert b"from-elsewhere" in read_until(fd, b"from-elsewhere", 1.0)
        os.write(fd, b"\x03")  # Ctrl-C at the terminal
        rest = read_until(fd, b"\x00never", 2.0)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b"Traceback" not in rest and b"Aborted" not in rest


def on_a_terminal(root: Path, *args: str) -> tuple[int, bytes]:
    """Run rtrace on a real pty (wide, colours on) until it exits; its exit code and output."""
    cmd = [shutil.which("rtrace") or "rtrace", "--dir", str(root), *args]
    return run_on_pty(cmd, {**os.environ, "COLUMNS": "400", "TERM": "xterm-256color"})


HOSTILE_REASON = "see ticket [/closed] [red]x \x1b[2J \x1b]0;pwned\x07 \u202eevil \x9b31m"


def test_stored_text_on_a_terminal_is_text(root: Path) -> None:
    """tail, query, show and stats on a pty print stored markup literally, controls escaped."""
    from reasoning_trace import DecisionLog

    with DecisionLog(str(root), sync="never", node="[b]node") as log:
        stored = log.record(
            "[red]act",
            False,
            {"[bold]voter\x1b[5m": {"passed": False, "reason": "[/] \x1b]8;;http://x\x07"}},
            {"agent_id": "[link=http://evil]a\x1b[0m", "n": ["[i]", "\x1b"]},
            HOSTILE_REASON,
        )
    for args in (("tail",), ("query",), ("show", "0"), ("stats",)):
        code, out = on_a_terminal(root, *args)
        assert code == 0 and b"Error" not in out and b"Traceback" not in out, (args, out)
        assert b"\x1b[2J" not in out and b"\x1b]" not in out and b"\x07" not in out, (args, out)
        assert b"\x1b[5m" not in out and b"\xe2\x80\xae" not in out and b"\xc2\x9b" not in out
        assert b"[red]act" in out, (args, out)  # printed as written, not drawn in red
        if args[0] != "stats":
            assert b"[/closed]" in out and b"\\x1b[2J" in out and b"\\u202e" in out, (args, out)
    code, out = on_a_terminal(root, "show", "0")
    assert b"[bold]voter\\x1b[5m" in out and b"[link=http://evil]a\\x1b[0m" in out
    for args in (("tail", "--json"), ("query", "--format", "json"), ("show", "0", "--json")):
        code, out = on_a_terminal(root, *args)
        assert code == 0 and out == stored.line + b"\r\n", args  # stored bytes (pty adds \r)


@needs_fake_clock
def test_tail_follow_across_midnight(root: Path, tmp_path: Path) -> None:
    """tail -f (piped: JSON Lines) follows a writer whose clock crosses UTC midnight: after a
    first record at 23:59:58, the writer records two at 23:59:59, moves its own clock to
    00:00:01 and records three more; tail yields each once, in seq order, from both day files.

    Every write runs on a fake clock (libfaketime), so the test is the same whatever today's
    date is and however long a process takes to start.
    """
    clock = FakeClock(tmp_path / "clock", "2026-11-25 23:59:58")
    first = subprocess.run(
        [
            *(shutil.which("rtrace") or "rtrace", "--dir", str(root)),
            *("record", "--action", "first", "--approved"),
        ],
        capture_output=True,
        text=True,
        env=clock.env(),
        timeout=60,
    )
    assert first.returncode == 0, first.stderr
    follower = subprocess.Popen(
        [shutil.which("rtrace") or "rtrace", "--dir", str(root), "tail", "-n", "1", "-f"],
        stdout=subprocess.PIPE,
        text=True,
    )
    out = Lines(follower)
    try:
        seen = follow_midnight_writer(root, clock, follower, out)
    finally:
        follower.kill()
        follower.wait(timeout=10)
        out.thread.join(timeout=10)
        assert follower.stdout is not None
        follower.stdout.close()
    assert [r["seq"] for r in seen] == list(range(1, len(seen) + 1)) == [1, 2, 3, 4, 5]
    assert [r["datetime_utc"][:10] for r in seen] == ["2026-11-25"] * 2 + ["2026-11-26"] * 3


def follow_midnight_writer(
    root: Path, clock: FakeClock, follower: subprocess.Popen[str], out: Lines
) -> list[dict]:  # type: ignore[type-arg]
    """Run a writer whose clock crosses midnight; what ``follower`` printed after "first".

    Every wait has a deadline: a follower that stops printing fails the test, never hangs it.
    """
    assert json.loads(out.take(1)[0])["action"] == "first"
    script = (
        f"import sys; sys.path.append({CLOCK_HERE!r})\n"
        "from fake_clock import move_clock\n"
        "from reasoning_trace import DecisionLog\n"
        f"with DecisionLog({str(root)!r}) as log:\n"
        "    for _ in range(2):\n"
        "        assert log.record('tick', True, {}, {}).day == '2026-11-25'\n"
        "    move_clock('2026-11-26 00:00:01')\n"
        "    for _ in range(3):\n"
        "        assert log.record('tick', True, {}, {}).day == '2026-11-26'\n"
    )
    clock.set("2026-11-25 23:59:59")
    writer = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=clock.env(),
        timeout=60,
    )
    assert writer.returncode == 0, writer.stderr
    total = len(lines(rtrace(root, "query", "--format", "json")))
    seen = [json.loads(line) for line in out.take(total - 1)]
    follower.send_signal(signal.SIGINT)
    assert follower.wait(timeout=10) == 0
    return seen


def test_tail_json(demo_log: Path) -> None:
    """tail -n N --json prints the newest N stored lines, oldest first."""
    got = lines(rtrace(demo_log, "tail", "-n", "3", "--json"))
    assert [r["seq"] for r in got] == [58, 59, 60]


def run_on_pty(cmd: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run a command on a pseudo-terminal; its exit code and everything it printed."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(cmd[0], cmd, env)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out


def test_colours_on_a_terminal_and_no_color(demo_log: Path) -> None:
    """A rejected decision stands out in colour on a terminal; NO_COLOR turns colour off."""
    cmd = [shutil.which("rtrace") or "rtrace", "--dir", str(demo_log), "tail", "-n", "5"]
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    _, coloured = run_on_pty(cmd, {**env, "TERM": "xterm-256color"})
    _, plain = run_on_pty(cmd, {**env, "TERM": "xterm-256color", "NO_COLOR": "1"})
    colour = re.compile(rb"\x1b\[[0-9;]*(?:3[0-7]|38;[0-9;]+)m")  # SGR foreground colours
    assert b"REJECTED" in coloured and colour.search(coloured)
    assert b"REJECTED" in plain and not colour.search(plain)  # bold may stay: it is no colour


def test_index_is_rebuilt_and_safe_while_writing(demo_log: Path) -> None:
    """The query index is derived (deleted, it is rebuilt) and stays right while a writer runs."""
    before = rtrace(demo_log, "query", "--action", "rollback", "--format", "json").stdout
    shutil.rmtree(demo_log / ".rtrace")
    assert rtrace(demo_log, "query", "--action", "rollback", "--format", "json").stdout == before
    writer = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).parent / "writer_proc.py"),
            str(demo_log),
            "w",
            "400",
            "2",
            "batch",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = 0
    while writer.poll() is None or seen < 861:
        got = lines(rtrace(demo_log, "query", "--subject", "tag=w", "--format", "json"))
        by_thread = {t: [r["subject"]["i"] for r in got if r["subject"]["t"] == t] for t in (0, 1)}
        for mine in by_thread.values():
            assert mine == list(range(len(mine)))  # each writer thread's records, no gaps
        seen = 61 + len(got)
        if writer.poll() is not None and seen == 861:
            break
    assert writer.wait() == 0 and seen == 861
    assert writer.stderr is not None
    writer.stderr.close()


def test_a_mistyped_dir_is_an_error_not_an_empty_log(tmp_path: Path) -> None:
    """Read commands on a directory that does not exist exit 2 and create nothing."""
    missing = tmp_path / "no-such-log"
    for args in (["verify"], ["tail"], ["query"], ["stats"], ["show", "0"], ["checkpoint"]):
        done = rtrace(missing, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "does not exist" in done.stderr or "no log at" in done.stderr
    assert not missing.exists()
    assert rtrace(missing, "record", "--action", "a", "--approved").returncode == 0
    assert missing.is_dir()  # a write creates the log
