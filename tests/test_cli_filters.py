"""What ``rtrace`` takes as input, checked the same way as the library and the API: times as
Unix seconds, counts of 0 or more, proofs between sizes that exist, verifier keys in every
form ``rtrace`` prints them; and the query filters on ``tail`` and ``tail -f``."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reasoning_trace import DecisionLog
from reasoning_trace.errors import QueryError

from .terminal import on_a_terminal, rtrace_command

T0 = 1_795_962_740  # a fixed instant (2026-11-29T09:12:20Z): no test reads today's date


def clock_from(start: int) -> object:
    """A clock (ns) that starts at ``start`` seconds and moves one minute a reading."""
    now = [start * 10**9]

    def read() -> int:
        now[0] += 60 * 10**9
        return now[0]

    return read


@pytest.fixture
def gate(root: Path) -> Path:
    """Twelve decisions a minute apart from T0: every third rejected by safety, subjects
    agent-0..agent-3, actions upgrade and rollback in turn; signed."""
    with DecisionLog(str(root), clock=clock_from(T0)) as log:  # type: ignore[arg-type]
        for i in range(12):
            ok = i % 3 != 0
            log.record(
                "upgrade" if i % 2 == 0 else "rollback",
                ok,
                {
                    "safety": {"passed": ok, "reason": "" if ok else "too risky"},
                    "cost": {"passed": True},
                },
                {"agent_id": f"agent-{i % 4}"},
                f"round {i}",
            )
        log.checkpoint()
    return root


def rtrace(root: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The installed ``rtrace`` against ``root``, piped."""
    return subprocess.run(
        [*rtrace_command(), "--dir", str(root), *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
    )


def seqs(done: subprocess.CompletedProcess[str]) -> list[int]:
    """The seqs of the records a command printed (JSON Lines)."""
    assert done.returncode == 0, done.stderr
    return [json.loads(line)["seq"] for line in done.stdout.splitlines()]


def test_since_and_until_take_unix_seconds(gate: Path) -> None:
    """``--since``/``--until`` accept Unix seconds as documented (whole or with a fraction),
    the same instants as ISO 8601; the library parses them the same way."""
    with DecisionLog(str(gate), create=False) as log:
        stamps = [d.timestamp for d in log.recent(12)]
    t, t6 = int(stamps[4]), int(stamps[6])  # whole seconds: the records are a minute apart
    iso = datetime.fromtimestamp(t, UTC).isoformat()
    assert seqs(rtrace(gate, "query", "--since", str(t))) == list(range(4, 12))
    assert seqs(rtrace(gate, "query", "--since", iso)) == list(range(4, 12))
    assert seqs(rtrace(gate, "query", "--since", f"{t}.0", "--until", str(t6))) == [4, 5]
    stats = json.loads(rtrace(gate, "stats", "--since", str(t)).stdout)
    assert stats["total"] == 8
    with DecisionLog(str(gate), create=False) as log:
        assert [d.seq for d in log.iter(since=str(t))] == list(range(4, 12))


def test_since_unix_seconds_over_http(gate: Path) -> None:
    """A real server takes the same Unix seconds (``?since=``) and refuses a non-time with a
    400 problem, not a 500."""
    pytest.importorskip("uvicorn")
    import httpx

    from .test_server import READ, auth, serving

    with DecisionLog(str(gate), create=False) as log:
        since = str(int(log.get(4).timestamp))
    with serving(gate) as (url, _):
        found = httpx.get(f"{url}/v1/decisions", params={"since": since}, headers=auth(READ))
        assert found.status_code == 200, found.text
        assert sorted(d["seq"] for d in found.json()["decisions"]) == list(range(4, 12))
        bad = httpx.get(f"{url}/v1/decisions", params={"since": "soonish"}, headers=auth(READ))
        assert bad.status_code == 400 and "not a time" in bad.text


@pytest.mark.parametrize(
    "args",
    [
        ("tail", "-n", "-3"),
        ("query", "--limit", "-1"),
        ("tail", "-n", "x"),
        ("query", "--since", "yesterday-ish"),
        ("query", "--since", "99999999999999d"),
        ("prove", "--consistency", "20", "5"),
        ("prove", "--consistency", "0", "5"),
        ("prove", "--consistency", "5", "9999"),
        ("prove", "--consistency", "-1", "3"),
        ("prove", "2", "--size", "0"),
        ("verify", "--vkey", "someone+00000000+AAAA"),
        ("verify-bundle", "{bundle}", "--vkey", "not a key"),
    ],
)
def test_bad_input_is_exit_2_with_the_reason(gate: Path, tmp_path: Path, args: tuple) -> None:
    """Bad input exits 2 with one line naming the problem and no traceback; the log is left
    exactly as it was."""
    bundle = tmp_path / "bundle"
    assert rtrace(gate, "export", "--bundle", str(bundle)).returncode == 0
    before = {p: p.read_bytes() for p in gate.glob("*.jsonl")}
    done = rtrace(gate, *(a.format(bundle=bundle) for a in args))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and done.stderr.strip()
    assert done.stdout == ""
    assert {p: p.read_bytes() for p in gate.glob("*.jsonl")} == before


def test_negative_counts_are_refused_by_the_library(gate: Path) -> None:
    """The library refuses a negative count or cursor with ``QueryError``, as the CLI does."""
    from reasoning_trace.query import Filter

    with DecisionLog(str(gate), create=False) as log:
        for call in (
            lambda: log.recent(-3),
            lambda: log.query(Filter(), limit=-1),
            lambda: log.query(Filter(), newest_first=True, before_seq=-5),
        ):
            with pytest.raises(QueryError, match="0 or more"):
                call()


def test_verify_bundle_takes_a_key_file_as_verify_does(gate: Path, tmp_path: Path) -> None:
    """``verify-bundle --vkey`` takes a key, the log's ``checkpoints/vkey`` file, or a file
    ``rtrace keys show`` wrote (text on a terminal, JSON Lines piped), as ``verify`` does."""
    bundle = tmp_path / "bundle"
    assert rtrace(gate, "export", "--bundle", str(bundle)).returncode == 0
    key = (gate / "checkpoints" / "vkey").read_text().split()[-1]
    as_json = tmp_path / "keys.jsonl"
    as_json.write_text(rtrace(gate, "keys", "show").stdout)
    as_text = tmp_path / "keys.txt"
    as_text.write_text("# the auditor's copy\n" + on_a_terminal(gate, "keys", "show").stdout)
    for given in (key, str(gate / "checkpoints" / "vkey"), str(as_json), str(as_text)):
        for command in (["verify-bundle", str(bundle)], ["verify"]):
            done = rtrace(gate, *command, "--vkey", given)
            assert done.returncode == 0, (command, given, done.stderr)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for command in (["verify-bundle", str(bundle)], ["verify"]):
        done = rtrace(gate, *command, "--vkey", str(empty))
        assert done.returncode == 2 and "no verifier key" in done.stderr


def test_approved_and_rejected_together_are_refused(gate: Path) -> None:
    """``--approved --rejected`` asks for nothing: refused (exit 2), not "last wins"."""
    for command in ("query", "stats", "tail"):
        done = rtrace(gate, command, "--approved", "--rejected")
        assert done.returncode == 2 and "--rejected" in done.stderr, command


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--action", "rollback"), [7, 9, 11]),
        (("--rejected",), [3, 6, 9]),
        (("--voter", "safety"), [3, 6, 9]),
        (("--subject", "agent_id=agent-1"), [1, 5, 9]),
        (("--since", str(T0 + 10 * 60)), [9, 10, 11]),
        (("--approved", "--action", "upgrade"), [4, 8, 10]),
    ],
)
def test_tail_takes_the_query_filters(gate: Path, args: tuple, expected: list[int]) -> None:
    """``tail -n 3`` with a filter shows the newest three decisions that match, oldest
    first, as ``journalctl`` and ``docker logs`` do."""
    assert seqs(rtrace(gate, "tail", "-n", "3", *args)) == expected


def test_tail_follow_applies_the_filters(gate: Path) -> None:
    """``tail -f --rejected`` (piped) prints only the new rejected decisions, as they land."""
    with subprocess.Popen(
        [*rtrace_command(), "--dir", str(gate), "tail", "-n", "1", "-f", "--rejected"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        assert json.loads(read_line(proc, 60))["seq"] == 9  # the newest rejected one
        with DecisionLog(str(gate)) as log:
            log.record("upgrade", True, {}, {"n": "a"})
            rejected = log.record("upgrade", False, {"safety": {"passed": False}}, {"n": "b"})
        assert json.loads(read_line(proc, 60))["seq"] == rejected.seq
        with DecisionLog(str(gate)) as log:
            log.record("upgrade", True, {}, {"n": "c"})
            last = log.record("halt", False, {}, {"n": "d"})
        assert json.loads(read_line(proc, 60))["seq"] == last.seq  # "c" was never printed
        proc.terminate()


def read_line(proc: subprocess.Popen[bytes], seconds: float) -> bytes:
    """One line of the process's stdout, waiting at most ``seconds`` for it."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + seconds
    buffered = b""
    while not buffered.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        assert ready, f"no line within {seconds} s (got {buffered!r})"
        chunk = os.read(fd, 1)
        assert chunk, "the follow ended"
        buffered += chunk
    return buffered


def test_piped_table_is_not_wrapped(gate: Path) -> None:
    """Human text sent through a pipe (``--format table``) keeps each row on one line, even
    with a long reason and ``COLUMNS=80``."""
    reason = "because " + "the canary stayed healthy for the whole window " * 6
    with DecisionLog(str(gate)) as log:
        log.record("promote", True, {}, {"model": "m-7"}, reason)
    done = subprocess.run(
        [
            *rtrace_command(),
            "--dir",
            str(gate),
            "query",
            "--format",
            "table",
            "--action",
            "promote",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
        timeout=60,
    )
    assert done.returncode == 0
    assert any(reason.strip() in line for line in done.stdout.splitlines())


def test_a_reader_that_stops_early_is_no_error(gate: Path) -> None:
    """``rtrace query | head -1``: the reader closes the pipe; rtrace stops quietly, exit 0."""
    with DecisionLog(str(gate)) as log:
        for i in range(3000):
            log.record("bulk", True, {}, {"i": i}, "x" * 100)
    done = subprocess.run(
        f"{' '.join(rtrace_command())} --dir {gate} query | head -1; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1 and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("serve", "--port", "70000"),
        ("serve", "--port", "-1"),
        ("serve", "--workers", "0"),
        ("serve", "--workers", "99999999999999999999999"),
        ("serve", "--streams-per-client", "-1"),
        ("serve", "--trust-proxy", "notanip"),
        ("demo", "-n", "-1"),
        ("query", "--limit", "9223372036854775808"),
        ("tail", "-n", "\uff11"),  # a fullwidth one
        ("--dir", "", "tail"),
        ("--stream", "A", "--stream", "B", "tail"),
        ("--source", "nats://127.0.0.1:99999", "tail"),
        ("--source", "nats://127.0.0.1:abc", "query"),
        ("--source", "nats://[::1", "stats"),
        ("--source", "nats://127.0.0.1:4222", "--stream", "a.b", "tail"),
        ("replicate", "--nats", "nats://127.0.0.1:99999", "--once"),
        ("replicate", "--nats", "nats://127.0.0.1:4222", "--stream", "", "--once"),
        ("replicate", "--nats", "nats://127.0.0.1:4222", "--node", "", "--once"),
        ("verify", "--replica", "nats://127.0.0.1:99999", "--trust-stream-keys"),
        ("--source", "nats://127.0.0.1:4222", "doctor"),
        ("--source", "nats://127.0.0.1:4222", "adopt"),
        ("--source", "nats://127.0.0.1:4222", "keys", "show"),
        ("doctor", "--source", "nats://127.0.0.1:4222"),
    ],
)
def test_bad_options_anywhere_are_exit_2(gate: Path, args: tuple) -> None:
    """Out-of-range numbers, empty or repeated global options, malformed NATS URLs and stream
    names, and --source for a command that works on a local log: exit 2, one reason, no
    traceback, nothing started and nothing written."""
    before = {p: p.read_bytes() for p in gate.glob("*.jsonl")}
    done = subprocess.run(
        [*rtrace_command(), *(["--dir", str(gate)] if args[0] != "--dir" else []), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and done.stderr.strip()
    assert {p: p.read_bytes() for p in gate.glob("*.jsonl")} == before


def test_the_same_global_option_twice_is_refused(gate: Path, tmp_path: Path) -> None:
    """``--dir A --dir B`` (before the command, after it, or both) is refused, not "last
    wins"; the same value twice is fine."""
    other = str(tmp_path / "other")
    for args in (
        ("--dir", str(gate), "--dir", other, "tail"),
        ("tail", "--dir", str(gate), "--dir", other),
        ("--dir", other, "tail", "--dir", str(gate)),
    ):
        done = subprocess.run([*rtrace_command(), *args], capture_output=True, text=True)
        assert done.returncode == 2 and "--dir given twice" in done.stderr, args
    same = subprocess.run(
        [*rtrace_command(), "--dir", str(gate), "tail", "--dir", str(gate), "-n", "1"],
        capture_output=True,
        text=True,
    )
    assert same.returncode == 0 and len(same.stdout.splitlines()) == 1


@pytest.mark.parametrize(
    ("stdin", "args"),
    [
        ('{"action":"e","approved":true,"action":"f"}', ("--json", "-")),
        ('{"action":"e","approved":true,"subject":{"n":9007199254740993}}', ("--json", "-")),
        ('{"action":"e","approved":true,"action":"f"}\n', ("--jsonl", "-")),
        (None, ("--action", "a", "--approved", "--vote", "s=pass", "--vote", "s=fail")),
        (None, ("--action", "a", "--approved", "--subject", "k=1", "--subject", "k=2")),
        (None, ("--action", "a", "--approved", "--id", "00")),
        (None, ("--action", "a", "--approved", "--id", "17")),
    ],
)
def test_record_refuses_what_the_api_refuses(gate: Path, stdin: str | None, args: tuple) -> None:
    """A repeated key, a number JavaScript would round, a voter or subject key given twice,
    and an id of digits only (it would read as a seq) are refused (exit 2) as the API refuses
    them; the log is left exactly as it was."""
    before = {p: p.read_bytes() for p in gate.glob("*.jsonl")}
    done = rtrace(gate, "record", *args, stdin=stdin)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert {p: p.read_bytes() for p in gate.glob("*.jsonl")} == before


def shell(command: str) -> subprocess.CompletedProcess[str]:
    """``command`` run by bash (for redirections such as ``>&-`` and pipes into ``head``)."""
    return subprocess.run(
        command, shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120
    )


def test_closed_streams_do_not_stop_the_work(gate: Path) -> None:
    """With stdout closed a reader exits 0 and ``record`` still records (exit 0); with stderr
    closed a usage error is still exit 2."""
    cmd = " ".join(rtrace_command())
    for args in ("tail", "query --format csv", "stats", "verify", "keys show"):
        done = shell(f"{cmd} --dir {gate} {args} >&-")
        assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stderr)
    assert shell(f"{cmd} --dir {gate} record --action closed --approved >&-").returncode == 0
    with DecisionLog(str(gate), create=False) as log:
        assert log.recent(1)[0].action == "closed"
    assert shell(f"{cmd} --dir {gate} tail --no-such-option 2>&-").returncode == 2


def test_readers_that_leave_early(gate: Path) -> None:
    """``| head -1`` after ``tail -n`` of thousands, ``query --format csv`` and ``doctor``: exit
    0 quietly; ``record --jsonl`` whose reader leaves still records every line."""
    with DecisionLog(str(gate), sync="never") as log:
        for i in range(3000):
            log.record("bulk", True, {}, {"i": i}, "x" * 100)
    cmd = " ".join(rtrace_command())
    for args in ("tail -n 3000", "query --format csv", "doctor", "query --format table"):
        done = shell(f"{cmd} --dir {gate} {args} | head -1; exit ${{PIPESTATUS[0]}}")
        assert done.returncode == 0, (args, done.stderr)
        assert "Traceback" not in done.stderr, args
    lines = "".join(
        f'{{"action":"jl","approved":true,"subject":{{"i":{i}}}}}\n' for i in range(2500)
    )
    done = subprocess.run(
        f"{cmd} --dir {gate} record --jsonl - | head -1; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        input=lines,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "2500 stored, 0 refused" in done.stderr, done.stderr
    with DecisionLog(str(gate), create=False) as log:
        assert sum(1 for _ in log.iter(action="jl")) == 2500


def test_a_damaged_vkey_file_is_a_clear_failure(gate: Path) -> None:
    """A byte that is not UTF-8 in ``checkpoints/vkey``: every command says which file is
    damaged (exit 1 for readers, 2 for a writer that cannot sign), with no traceback."""
    with open(gate / "checkpoints" / "vkey", "ab") as fh:
        fh.write(b"\xff\n")
    for args, code in (
        (("verify",), 1),
        (("show", "0"), 1),
        (("keys", "show"), 1),
        (("checkpoint", "--json"), 1),
        (("record", "--action", "a", "--approved"), 2),
    ):
        done = rtrace(gate, *args)
        assert done.returncode == code, (args, done.stderr)
        assert "vkey" in done.stderr and "Traceback" not in done.stderr, args
