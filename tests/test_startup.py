"""What a fresh process imports: ``import reasoning_trace``, ``record_decision`` and
``read_recent``, and ``rtrace tail`` to a pipe load none of the optional extras' libraries (the
table library, the server stack, NATS, HTTP clients); ``tail`` reads the ends of the day files
without the engine or an index.

Each check runs a real interpreter and looks at its ``sys.modules``, so it fails when a module
starts importing one of them at the top; none is timed (``bench/bench_startup.py`` times them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import reasoning_trace
from reasoning_trace import DecisionLog
from reasoning_trace.cli import LATER

SRC = str(Path(reasoning_trace.__file__).resolve().parents[1])

#: The libraries of the extras and of the terminal output: never loaded by these paths.
HEAVY = (
    "rich",
    "fastapi",
    "uvicorn",
    "starlette",
    "nats",
    "httpx",
    "pydantic",
    "prometheus_client",
)

#: Prints, at exit, the heavy libraries and the engine's modules the process loaded.
REPORT = (
    "import atexit, json, sys\n"
    "def report():\n"
    f"    heavy = {HEAVY!r}\n"
    "    engine = ('reasoning_trace.log', 'reasoning_trace.files', 'reasoning_trace.index',\n"
    "              'reasoning_trace.signed_tree', 'sqlite3', 'cryptography')\n"
    "    loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
    "    eng = sorted(m for m in sys.modules if m in engine)\n"
    "    print('LOADED', json.dumps([loaded, eng]), file=sys.stderr)\n"
    "atexit.register(report)\n"
)

DAY_NS = 86_400 * 10**9
START_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z


def python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter on this checkout's package; stdout is a pipe."""
    return subprocess.run(
        [sys.executable, "-c", REPORT + code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC, **env},
        timeout=120,
    )


def loaded(done: subprocess.CompletedProcess[str]) -> tuple[list[str], list[str]]:
    """The heavy libraries and the engine modules the process reported."""
    line = next(x for x in done.stderr.splitlines() if x.startswith("LOADED "))
    heavy, engine = json.loads(line[len("LOADED ") :])
    return heavy, engine


def rtrace(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``rtrace --dir root ...`` in a fresh interpreter, stdout piped."""
    argv = ["rtrace", "--dir", str(root), *args]
    return python(f"sys.argv = {argv!r}\nfrom reasoning_trace.cli import main\nmain()\n")


def three_days(root: Path, per_day: int = 40) -> list[int]:
    """A log of ``per_day`` decisions on each of three days in 2026; the seqs recorded."""
    now = [START_NS]
    with DecisionLog(str(root), sync="never", clock=lambda: now[0]) as log:
        for day in range(3):
            now[0] = START_NS + day * DAY_NS
            log.record_many(
                {"action": "deploy", "approved": n % 3 != 0, "subject": {"n": n}}
                for n in range(day * per_day, (day + 1) * per_day)
            )
        assert len(log) == 3 * per_day
    assert len(list(root.glob("*.jsonl"))) == 3
    return list(range(3 * per_day))


def test_import_loads_no_extra_and_not_the_engine() -> None:
    """``import reasoning_trace`` loads no extra's library, and not the log engine either."""
    done = python("import reasoning_trace\n")
    assert done.returncode == 0, done.stderr
    assert loaded(done) == ([], [])


def test_names_loaded_on_first_use_resolve() -> None:
    """Every name in ``__all__`` resolves, from the module that defines it."""
    code = (
        "import reasoning_trace as r\n"
        "for name in r.__all__:\n"
        "    assert getattr(r, name) is not None, name\n"
        "assert r.DecisionLog.__module__ == 'reasoning_trace.log'\n"
        "assert r.bus is __import__('reasoning_trace.events').events.bus\n"
        "print(len(r.__all__))\n"
    )
    done = python(code)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == len(reasoning_trace.__all__)


def test_record_decision_and_read_recent_load_no_extra(tmp_path: Path) -> None:
    """The original module's two calls record and read back without loading an extra."""
    code = (
        "import reasoning_trace\n"
        "ok = reasoning_trace.record_decision('deploy', True, {'qa': {'passed': True}},"
        " {'agent_id': 'a1'}, 'fine')\n"
        "rows = reasoning_trace.read_recent(5)\n"
        "print(ok, len(rows), rows[-1]['action'])\n"
    )
    done = python(code, REASONING_TRACE_DIR=str(tmp_path / "log"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "1", "deploy"]
    assert loaded(done)[0] == []


def test_tail_to_a_pipe_loads_no_table_library_and_no_engine(tmp_path: Path) -> None:
    """``rtrace tail -n 20`` into a pipe prints the newest 20 as JSON Lines without loading
    rich or an extra, without the engine (writer, index, tree), and writes nothing."""
    root = tmp_path / "log"
    seqs = three_days(root)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    done = rtrace(root, "tail", "-n", "20")
    assert done.returncode == 0, done.stderr
    assert [json.loads(x)["seq"] for x in done.stdout.splitlines()] == seqs[-20:]
    assert loaded(done) == ([], [])
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    cache = Path(os.environ["XDG_CACHE_HOME"])
    assert not cache.exists() or not any(cache.rglob("*.sqlite"))


def test_tail_reads_only_the_newest_day_files(tmp_path: Path) -> None:
    """``tail`` reads back from the end: a corrupt line in the oldest day file does not stop
    it, while a query over every day meets that line and fails (exit 1)."""
    root = tmp_path / "log"
    seqs = three_days(root)
    oldest = sorted(root.glob("*.jsonl"))[0]
    lines = oldest.read_bytes().split(b"\n")
    lines[5] = b'{"not": "a record"'
    oldest.write_bytes(b"\n".join(lines))
    done = rtrace(root, "tail", "-n", "50")
    assert done.returncode == 0, done.stderr
    assert [json.loads(x)["seq"] for x in done.stdout.splitlines()] == seqs[-50:]
    scan = rtrace(root, "query", "--json")
    assert scan.returncode == 1 and oldest.name in scan.stderr


def test_tail_with_filters_or_follow_flags_still_filters(tmp_path: Path) -> None:
    """A filtered ``tail`` answers through the engine: only matching decisions, newest last."""
    root = tmp_path / "log"
    three_days(root)
    done = rtrace(root, "tail", "-n", "3", "--rejected")
    assert done.returncode == 0, done.stderr
    got = [json.loads(x) for x in done.stdout.splitlines()]
    assert len(got) == 3 and not any(d["approved"] for d in got)
    assert [d["seq"] for d in got] == sorted(d["seq"] for d in got)


def test_tail_of_a_missing_root_creates_nothing(tmp_path: Path) -> None:
    """``tail`` of a root that does not exist exits 2 naming it, and creates nothing."""
    done = rtrace(tmp_path / "nowhere", "tail", "-n", "20")
    assert done.returncode == 2
    assert "nowhere" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "nowhere").exists()


def test_help_loads_no_extra_and_not_the_engine() -> None:
    """``rtrace --help`` loads neither an extra's library nor the engine."""
    done = python("sys.argv = ['rtrace', '--help']\nfrom reasoning_trace.cli import main\nmain()\n")
    assert done.returncode == 0, done.stderr
    assert "tail" in done.stdout
    assert loaded(done) == ([], [])


def test_each_command_is_found_in_the_module_named_for_it() -> None:
    """``rtrace``'s list of commands names each command's module: asked for alone in a fresh
    process, each command is found there, and the list holds every command there is."""
    code = (
        "import click\n"
        "from reasoning_trace.cli import LATER, cli\n"
        "ctx = click.Context(cli)\n"
        "names = cli.list_commands(ctx)\n"
        "for name, module in LATER.items():\n"
        "    command = cli.get_command(ctx, name)\n"
        "    assert command is not None and command.name == name, name\n"
        "    assert command.callback.__module__ == module, (name, command.callback.__module__)\n"
        "assert sorted(cli.commands) == names, (sorted(cli.commands), names)\n"
        "print(len(names))\n"
    )
    done = python(code)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= len(LATER) + 2  # and demo, serve: defined in the group's module


def test_tail_imports_only_its_own_command_module(tmp_path: Path) -> None:
    """A fresh ``rtrace tail`` imports the module of the reading commands and no other
    command's module."""
    root = tmp_path / "log"
    three_days(root)
    code = (
        f"sys.argv = ['rtrace', '--dir', {str(root)!r}, 'tail', '-n', '2']\n"
        "atexit.register(lambda: print('CLI', json.dumps(sorted(m for m in sys.modules"
        " if m.startswith('reasoning_trace.cli.'))), file=sys.stderr))\n"
        "from reasoning_trace.cli import main\nmain()\n"
    )
    done = python(code)
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stderr.splitlines() if x.startswith("CLI "))
    modules = json.loads(line[4:])
    assert "reasoning_trace.cli.decisions" in modules
    assert not set(modules) & (set(LATER.values()) - {"reasoning_trace.cli.decisions"})
