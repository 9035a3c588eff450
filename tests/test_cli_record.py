"""``rtrace record`` (flags, ``--json``, ``--jsonl``), the verdict flags, ``--version`` and
``-h``, the missing-extra message, and where demo records go, driven as a real executable."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import reasoning_trace
from reasoning_trace import DecisionLog
from reasoning_trace.cli import cli
from reasoning_trace.cli.record import CHUNK
from reasoning_trace.record import MAX_LINE_BYTES

from .natsserver import free_port

SRC = Path(reasoning_trace.__file__).parent.parent


def run(
    *args: str,
    stdin: str | bytes | None = None,
    env: dict[str, str] | None = None,
    pythonpath: tuple[Path, ...] = (),
) -> subprocess.CompletedProcess[bytes]:
    """``python -m reasoning_trace ARGS`` of this source tree, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "reasoning_trace", *args],
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True,
        env=environment(env, pythonpath),
        timeout=300,
    )


def environment(env: dict[str, str] | None = None, pythonpath: tuple[Path, ...] = ()) -> dict:
    """The test's environment, running this source tree (after ``pythonpath``), plus ``env``."""
    path = os.pathsep.join(str(p) for p in (*pythonpath, SRC))
    base = {k: v for k, v in os.environ.items() if k != "REASONING_TRACE_DIR"}
    return {**base, "PYTHONPATH": path, **(env or {})}


def stored_lines(root: Path) -> list[bytes]:
    """Every stored line of the log at ``root``, as ``rtrace query --format json`` prints them."""
    done = run("--dir", str(root), "query", "--format", "json")
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def day_files(root: Path) -> dict[str, bytes]:
    """The bytes of every day file under ``root`` (the records as stored)."""
    return {p.name: p.read_bytes() for p in root.rglob("*.jsonl") if ".rtrace" not in p.parts}


def decision(action: str, **fields: object) -> str:
    """One JSON line of a decision request."""
    return json.dumps({"action": action, "approved": True, **fields})


# --- record --jsonl ---------------------------------------------------------------------------


def test_jsonl_stores_the_valid_lines_and_reports_each_refused_one(root: Path) -> None:
    """Valid lines are stored and printed as stored; each bad line is named by its number on
    stderr with the reason; blank lines are skipped; the exit status is 2."""
    lines = [
        decision("deploy", subject={"n": 1}),
        "",
        '{"action": "no verdict"}',
        "not json at all",
        decision("rollback", id="r-1"),
        "   ",
        "[1, 2]",
        decision("halt", reason="done"),
    ]
    path = root.parent / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    done = run("--dir", str(root), "record", "--jsonl", str(path))
    assert done.returncode == 2
    err = done.stderr.decode()
    assert "line 3: approved: required" in err
    assert "line 4: not JSON" in err
    assert "line 7: a decision must be a JSON object" in err
    assert "rtrace: 3 stored, 3 refused" in err and "Traceback" not in err
    assert done.stdout.splitlines() == stored_lines(root)
    assert [json.loads(x)["action"] for x in done.stdout.splitlines()] == [
        "deploy",
        "rollback",
        "halt",
    ]


def test_jsonl_from_stdin_all_stored_exits_0(root: Path) -> None:
    """Every line stored (from stdin, Windows line ends too): exit 0, the stored lines on
    stdout byte for byte, and the count on stderr."""
    text = decision("a", votes={"safety": {"passed": True}}) + "\r\n" + decision("b") + "\n"
    done = run("--dir", str(root), "record", "--jsonl", "-", stdin=text)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == stored_lines(root) and len(stored_lines(root)) == 2
    assert b"2 stored, 0 refused" in done.stderr


def test_jsonl_refusals_write_nothing_and_use_no_seq(root: Path) -> None:
    """A line that is not JSON, too long, not UTF-8, an unknown field, a bad id, or a reused id
    with other content leaves the log exactly as it was; the next record takes the next seq."""
    assert (
        run("--dir", str(root), "record", "--action", "a", "--approved", "--id", "k").returncode
        == 0
    )
    before = day_files(root)
    bad = b"\n".join(
        [
            b'{"action": "x", "approved": tru',
            b'{"action": "' + b"x" * MAX_LINE_BYTES + b'", "approved": true}',
            b'{"action": "caf\xe9", "approved": true}',
            decision("x", colour="red").encode(),
            decision("x", id="not an id").encode(),
            json.dumps({"action": "a", "approved": False, "id": "k"}).encode(),
        ]
    )
    done = run("--dir", str(root), "record", "--jsonl", "-", stdin=bad)
    err = done.stderr.decode()
    assert done.returncode == 2 and done.stdout == b""
    assert f"line 2: longer than {MAX_LINE_BYTES} bytes" in err
    assert "line 3: not UTF-8" in err
    assert "line 4: colour: unknown field" in err
    assert "line 5: id: " in err
    assert "line 6: id 'k' is already recorded" in err
    assert "0 stored, 6 refused" in err
    assert day_files(root) == before
    after = run("--dir", str(root), "record", "--action", "b", "--rejected")
    assert json.loads(after.stdout)["seq"] == 1


def test_jsonl_streams_a_chunk_before_the_input_ends(root: Path) -> None:
    """The first CHUNK lines are stored and printed while the input is still open: the input
    is read a chunk at a time, never whole; the rest follows when it comes."""
    command = [
        sys.executable,
        "-m",
        "reasoning_trace",
        "--dir",
        str(root),
        "record",
        "--jsonl",
        "-",
    ]
    with subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=environment(),
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            chunk = "".join(decision("a", subject={"n": i}) + "\n" for i in range(CHUNK))
            proc.stdin.write(chunk.encode())
            proc.stdin.flush()
            first = [proc.stdout.readline() for _ in range(CHUNK)]  # blocks until stored
            assert [json.loads(line)["seq"] for line in first] == list(range(CHUNK))
            assert proc.poll() is None  # still reading: the input has not ended
            proc.stdin.write((decision("b") + "\n").encode())
            proc.stdin.close()
            rest = proc.stdout.read()
            assert proc.wait(timeout=120) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert [json.loads(line)["action"] for line in rest.splitlines()] == ["b"]
    assert len(stored_lines(root)) == CHUNK + 1


def test_jsonl_of_many_chunks_keeps_the_signing_schedule(root: Path, tmp_path: Path) -> None:
    """2,500 lines (three commits) are all stored in order, and the log verifies with
    checkpoints signed on the usual schedule (every 1024 records)."""
    path = tmp_path / "many.jsonl"
    with path.open("w") as out:
        for i in range(2500):
            out.write(decision("a", subject={"n": i}) + "\n")
    done = run("--dir", str(root), "record", "--jsonl", str(path))
    assert done.returncode == 0, done.stderr
    seqs = [json.loads(line)["seq"] for line in done.stdout.splitlines()]
    assert seqs == list(range(2500))
    with DecisionLog(str(root)) as log:
        sizes = [entry.size for entry in log.checkpoints.entries()]
    assert {1024, 2048} <= set(sizes)
    assert run("--dir", str(root), "verify").returncode == 0


# --- flags that cannot go together ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--action", "rollback"], "--action"),
        (["--approved"], "--approved"),
        (["--rejected", "--reason", "why"], "--rejected, --reason"),
        (["--vote", "safety=pass", "--subject", "k=v", "--id", "i1"], "--vote, --subject, --id"),
    ],
)
@pytest.mark.parametrize("source", ["--json", "--jsonl"])
def test_field_flags_beside_json_are_refused(
    root: Path, source: str, flags: list[str], named: str
) -> None:
    """A flag that sets a decision field, given with --json or --jsonl, is refused (exit 2,
    naming it) instead of being silently overridden by the JSON; nothing is written."""
    done = run("--dir", str(root), "record", source, "-", *flags, stdin=decision("deploy"))
    err = done.stderr.decode()
    assert done.returncode == 2 and f"{named} cannot be given with {source}" in err
    assert not root.exists()


def test_json_and_jsonl_together_are_refused(root: Path) -> None:
    """--json and --jsonl together are refused (exit 2)."""
    done = run("--dir", str(root), "record", "--json", "-", "--jsonl", "-", stdin=decision("x"))
    assert done.returncode == 2 and b"--json or --jsonl, not both" in done.stderr


def test_vote_verdict_in_any_case(root: Path) -> None:
    """--vote takes pass and fail in any case: PASS, Pass, pass, FAIL, Fail."""
    votes = ["a=PASS", "b=Pass:ok", "c=pass", "d=FAIL:Too Risky", "e=Fail"]
    args = [x for v in votes for x in ("--vote", v)]
    done = run("--dir", str(root), "record", "--action", "x", "--approved", *args)
    assert done.returncode == 0, done.stderr
    stored = json.loads(done.stdout)["votes"]
    assert {name: v["passed"] for name, v in stored.items()} == {
        "a": True,
        "b": True,
        "c": True,
        "d": False,
        "e": False,
    }
    assert stored["d"]["reason"] == "Too Risky"


@pytest.mark.parametrize(
    "command",
    [
        ["record", "--action", "x"],
        ["query"],
        ["stats"],
        ["export", "--bundle", "out"],
    ],
)
def test_approved_and_rejected_together_are_refused(root: Path, command: list[str]) -> None:
    """--approved with --rejected is refused (exit 2), not "the last one wins"."""
    assert run("--dir", str(root), "record", "--action", "x", "--approved").returncode == 0
    before = day_files(root)
    done = run("--dir", str(root), *command, "--approved", "--rejected")
    assert done.returncode == 2 and b"--approved or --rejected, not both" in done.stderr
    assert day_files(root) == before


def test_approved_and_rejected_each_filter(root: Path) -> None:
    """--approved and --rejected, each alone, keep only the decisions with that verdict."""
    for verdict in ("--approved", "--rejected", "--rejected"):
        assert run("--dir", str(root), "record", "--action", "x", verdict).returncode == 0
    for verdict, count in (("--approved", 1), ("--rejected", 2)):
        done = run("--dir", str(root), "query", verdict, "--format", "json")
        assert len(done.stdout.splitlines()) == count


# --- --version and -h ---------------------------------------------------------------------------


def test_version() -> None:
    """rtrace --version prints "rtrace <version>" of the package."""
    done = run("--version")
    assert done.returncode == 0
    assert done.stdout.decode() == f"rtrace {reasoning_trace.__version__}\n"


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command path of ``group``, sub-groups' commands included."""
    for name, command in group.commands.items():
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def test_h_is_help_for_the_group_and_every_command() -> None:
    """-h prints the same help as --help, for rtrace and for each command and sub-command."""
    runner = CliRunner()
    paths = [(), *_commands(cli)]
    assert ("record",) in paths and ("tail",) in paths
    for path in paths:
        short = runner.invoke(cli, [*path, "-h"])
        long = runner.invoke(cli, [*path, "--help"])
        assert short.exit_code == 0 and short.output == long.output, path
        assert "-h, --help" in short.output, path


def test_tail_n_is_still_lines(root: Path) -> None:
    """tail -n keeps meaning a number of lines beside -h."""
    for action in ("a", "b", "c"):
        assert run("--dir", str(root), "record", "--action", action, "--approved").returncode == 0
    done = run("--dir", str(root), "tail", "-n", "2", "--json")
    assert [json.loads(x)["action"] for x in done.stdout.splitlines()] == ["b", "c"]


# --- the missing extra --------------------------------------------------------------------------


def test_serve_without_the_server_extra_says_how_to_install_it(tmp_path: Path) -> None:
    """With fastapi unimportable, rtrace serve exits 2 giving the pip commands for the
    package index and for a checkout, without a traceback."""
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "fastapi.py").write_text("raise ImportError('fastapi is blocked by this test')\n")
    done = run("--dir", str(tmp_path / "log"), "serve", pythonpath=(blocked,))
    err = done.stderr.decode()
    assert done.returncode == 2 and done.stdout == b""
    assert "pip install 'reasoning-trace[server]'" in err
    assert "pip install '.[server]'" in err
    assert "fastapi is missing" in err and "Traceback" not in err


# --- demo logs ----------------------------------------------------------------------------------


def test_demo_without_dir_never_writes_to_the_environment_log(tmp_path: Path) -> None:
    """With $REASONING_TRACE_DIR set and no --dir, demo writes to a new temporary directory,
    says where and how to look at it, and the log the variable names is not touched."""
    production = tmp_path / "production"
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"REASONING_TRACE_DIR": str(production), "TMPDIR": str(temp)}
    done = run("demo", "-n", "5", "--seed", "1", env=env)
    assert done.returncode == 0, done.stderr
    assert not production.exists()
    found = re.search(
        r"demo log in (\S+) \(look at it: rtrace --dir (\S+) tail\)", done.stderr.decode()
    )
    assert found is not None and found.group(1) == found.group(2)
    demo_dir = Path(found.group(1))  # <temp>/rtrace-demo-*/log, its key beside it
    assert demo_dir.parent.parent == temp and demo_dir.parent.name.startswith("rtrace-demo-")
    records = [json.loads(x) for x in stored_lines(demo_dir)]
    assert len(records) == 5 and all(r["subject"]["demo"] is True for r in records)


def test_demo_with_dir_writes_there_marked_as_demo(root: Path) -> None:
    """demo with --dir writes to that log (the user named it), each record marked as demo."""
    done = run("--dir", str(root), "demo", "-n", "3")
    assert done.returncode == 0 and b"demo log in" not in done.stderr
    records = [json.loads(x) for x in stored_lines(root)]
    assert len(records) == 3 and all(r["subject"]["demo"] is True for r in records)


@contextmanager
def serve_demo(
    tmp_path: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], Path, str]]:
    """``rtrace serve --demo`` on a free port (``env`` added to the test's environment), once
    it answers /healthz: the process, the directory it announced, and its URL."""
    import httpx

    temp = tmp_path / "tmp"
    temp.mkdir()
    port = free_port()
    with subprocess.Popen(
        [sys.executable, "-m", "reasoning_trace", "serve", "--demo", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=environment({"TMPDIR": str(temp), **(env or {})}),
    ) as proc:
        assert proc.stderr is not None
        try:
            deadline = time.monotonic() + 60
            announced = b""
            while b"\n" not in announced:
                assert time.monotonic() < deadline, "serve --demo did not announce its log"
                ready, _, _ = select.select([proc.stderr], [], [], 1)
                if ready:
                    chunk = os.read(proc.stderr.fileno(), 4096)
                    assert chunk, f"serve exited: {announced!r}"
                    announced += chunk
            found = re.search(rb"serving (\S+) at (http://\S+/)", announced)
            assert found is not None, announced
            url = found.group(2).decode()
            while True:
                try:
                    if httpx.get(f"{url}healthz", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass  # not listening yet
                assert time.monotonic() < deadline and proc.poll() is None, "serve did not answer"
                select.select([], [], [], 0.05)
            yield proc, Path(found.group(1).decode()), url
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_demo_removes_its_log_when_stopped(tmp_path: Path, sig: signal.Signals) -> None:
    """serve --demo serves a temporary log of demo records and removes it on SIGTERM and on
    Ctrl-C (SIGINT), without a traceback; SIGTERM still ends it as killed by SIGTERM."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")
    import httpx

    with serve_demo(tmp_path) as (proc, demo_dir, url):
        assert demo_dir.is_dir() and demo_dir.parent.parent == tmp_path / "tmp"
        deadline = time.monotonic() + 60
        while not (page := httpx.get(f"{url}v1/decisions", timeout=5).json()["decisions"]):
            assert time.monotonic() < deadline, "the demo gate recorded nothing"
            select.select([], [], [], 0.05)
        assert all(d["subject"]["demo"] is True for d in page)
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
    assert not demo_dir.parent.exists()
    assert "Traceback" not in err
    if sig == signal.SIGTERM:
        assert code == -signal.SIGTERM
