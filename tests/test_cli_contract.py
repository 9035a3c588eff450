"""The output and exit-code contract of every ``rtrace`` command (SPEC section 6), walked
command by command with the installed executable: piped (JSON Lines), on a pseudo-terminal
(words for a person), with ``--json`` on a terminal, and with bad usage (exit 2, no
traceback). A command added without a row here fails ``test_every_command_is_walked``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import click
import pytest

from reasoning_trace import DecisionLog
from reasoning_trace.cli import cli
from reasoning_trace.witness import Witness

from .terminal import on_a_terminal, rtrace_command

# command -> (arguments after the command name, what it prints piped)
#   "jsonl": JSON Lines;  "note": the checkpoint note text
WALK: dict[str, tuple[tuple[str, ...], str]] = {
    "record": (("--action", "halt", "--approved", "--vote", "ops=pass"), "jsonl"),
    "tail": (("-n", "3"), "jsonl"),
    "show": (("2",), "jsonl"),
    "query": (("--action", "gate"), "jsonl"),
    "stats": ((), "jsonl"),
    "verify": ((), "jsonl"),
    "checkpoint": ((), "note"),
    "prove": (("2",), "jsonl"),
    "keys init": ((), "jsonl"),
    "keys show": ((), "jsonl"),
    "keys rotate": ((), "jsonl"),
    "export": (("--bundle", "{tmp}/bundle-{n}"), "jsonl"),
    "verify-bundle": (("{tmp}/bundle",), "jsonl"),
    "adopt": ((), "jsonl"),
    "doctor": ((), "jsonl"),
    "demo": (("-n", "3", "--seed", "1"), "jsonl"),
    "witness init": (("--state", "{tmp}/witness-{n}", "--name", "witness.test/walk"), "jsonl"),
    "witness add-log": (("--state", "{tmp}/witness", "{tmp}/log/checkpoints/vkey"), "jsonl"),
}
# Long-running commands, walked by their own tests: ``serve`` (tests/test_server.py) and
# ``replicate`` (``test_replicate_prints_its_summary_as_json`` below, with a NATS server).
LONG_RUNNING = {"serve", "replicate", "witness serve"}
# ``witness push`` needs a running witness: walked piped by tests/test_witness.py.
NEEDS_A_WITNESS = {"witness push"}


def leaf_commands(group: click.Group, prefix: str = "") -> list[str]:
    """Every command a user can run, sub-commands as ``keys show``."""
    names = []
    for name, command in sorted(group.commands.items()):
        if command.hidden:
            continue
        if isinstance(command, click.Group):
            names += leaf_commands(command, f"{prefix}{name} ")
        else:
            names.append(prefix + name)
    return names


@pytest.fixture
def walked(root: Path, tmp_path: Path) -> Path:
    """A signed log of six decisions, an audit bundle of it at ``tmp_path/bundle`` and a
    witness at ``tmp_path/witness``."""
    Witness.init(tmp_path / "witness", "witness.test/walk")
    with DecisionLog(str(root)) as log:
        for i in range(6):
            log.record("gate", i % 3 != 0, {"safety": {"passed": i % 3 != 0}}, {"i": i})
        log.checkpoint()
    done = piped(root, "export", "--bundle", str(tmp_path / "bundle"))
    assert done.returncode == 0, done.stderr
    return root


def piped(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``rtrace --dir root args`` with stdout and stderr on pipes."""
    return subprocess.run(
        [*rtrace_command(), "--dir", str(root), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
        timeout=120,
    )


def arguments(command: str, tmp_path: Path, n: int) -> list[str]:
    """The walked arguments of ``command`` with its paths filled in."""
    args, _ = WALK[command]
    return [*command.split(), *(a.format(tmp=tmp_path, n=n) for a in args)]


def test_every_command_is_walked() -> None:
    """Every command (and sub-command) of ``rtrace`` has a row in the walk."""
    assert set(leaf_commands(cli)) == set(WALK) | LONG_RUNNING | NEEDS_A_WITNESS


@pytest.mark.parametrize("command", sorted(WALK))
def test_piped_output_is_json_lines(command: str, walked: Path, tmp_path: Path) -> None:
    """Piped, a command prints JSON Lines (a record as its stored line), exits 0, and keeps
    its messages on stderr; ``checkpoint`` prints its note, ready to keep."""
    done = piped(walked, *arguments(command, tmp_path, 1))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    _, kind = WALK[command]
    if kind == "note":
        assert done.stdout.splitlines()[2].endswith("=") and "\n\n— " in done.stdout
        return
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert rows and all(isinstance(row, dict) for row in rows), done.stdout
    stored = {line for day in walked.glob("*.jsonl") for line in day.read_text().splitlines()}
    for line in done.stdout.splitlines():
        if "seq" in json.loads(line) and "votes" in json.loads(line):
            assert line in stored  # a record is printed as its stored line, byte for byte


@pytest.mark.parametrize("command", sorted(WALK))
def test_on_a_terminal_it_speaks_to_a_person(command: str, walked: Path, tmp_path: Path) -> None:
    """On a terminal a command exits 0 and prints text for a person; only ``record`` and
    ``prove``, whose output is a record and a proof, print JSON there."""
    done = on_a_terminal(walked, *arguments(command, tmp_path, 2))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    first = done.stdout.lstrip()[:1]
    if command in ("record", "prove"):
        assert first == "{"
    else:
        assert first and first != "{", done.stdout


# ``record`` prints the stored records as JSON Lines everywhere; its --json names its input.
@pytest.mark.parametrize("command", sorted(set(WALK) - {"record"}))
def test_json_on_a_terminal(command: str, walked: Path, tmp_path: Path) -> None:
    """``--json`` on a terminal prints JSON Lines too (``checkpoint --json``: one object
    with the note and its fields)."""
    done = on_a_terminal(walked, *arguments(command, tmp_path, 3), "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert rows and all(isinstance(row, dict) for row in rows)


@pytest.mark.parametrize("command", sorted(set(WALK) | LONG_RUNNING | NEEDS_A_WITNESS))
def test_bad_usage_exits_2_without_a_traceback(command: str, walked: Path) -> None:
    """An unknown option is bad usage: exit 2, the reason on stderr, nothing on stdout."""
    done = piped(walked, *command.split(), "--no-such-option")
    assert done.returncode == 2
    assert "no such option" in done.stderr.lower() and "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("command", sorted(set(WALK) | LONG_RUNNING | NEEDS_A_WITNESS))
def test_global_options_after_the_command_name(command: str, walked: Path) -> None:
    """``--dir`` is accepted after the command name as before it, and two different
    ``--dir`` values are refused rather than one silently winning."""
    args = [*rtrace_command(), *command.split(), "--dir", str(walked), "--help"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--dir" in done.stdout
    if command in ("tail", "stats", "query", "keys show"):
        after = subprocess.run(
            [*rtrace_command(), *command.split(), "--dir", str(walked)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert after.returncode == 0, after.stderr
        assert after.stdout == piped(walked, *command.split()).stdout
        twice = piped(walked, *command.split(), "--dir", str(walked.parent / "other"))
        assert twice.returncode == 2 and "--dir given twice" in twice.stderr


def test_nothing_found_and_not_found(walked: Path) -> None:
    """A query that matches nothing is ok (exit 0, no output); a decision that does not exist
    is not found (exit 1) for show and prove, with the reason on stderr."""
    none = piped(walked, "query", "--action", "no-such-action")
    assert none.returncode == 0 and none.stdout == ""
    for args in (("show", "99"), ("prove", "99"), ("show", "no-such-id")):
        done = piped(walked, *args)
        assert done.returncode == 1 and "no decision" in done.stderr, args
        assert done.stdout == "" and "Traceback" not in done.stderr


def test_replicate_prints_its_summary_as_json(walked: Path, nats_server: object) -> None:
    """``replicate --once`` piped prints what it replicated as one JSON object."""
    url = nats_server.url  # type: ignore[attr-defined]
    done = piped(walked, "replicate", "--nats", url, "--node", "n1", "--once")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["node"] == "n1" and summary["next_seq"] == 6
