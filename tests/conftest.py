"""Shared fixtures: real log directories and helpers to snapshot what is on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reasoning_trace import DecisionLog

from .natsserver import NatsServer, require_server

HERE = Path(__file__).parent
VECTORS = HERE / "vectors"  # copied from the project's shared testdata; sources in SOURCE.md


def snapshot(root: Path) -> dict[str, bytes]:
    """Every non-derived file under a log root (day files, quarantine, checkpoints) with bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and rel.parts[0] != ".rtrace":
            out[str(rel)] = path.read_bytes()
    return out


def all_lines(root: Path) -> list[bytes]:
    """Every line of every day file, in file order."""
    lines: list[bytes] = []
    for path in sorted(root.glob("*.jsonl")):
        data = path.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{path} ends with a partial line"
        lines.extend(data.splitlines())
    return lines


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A fresh, not yet created log root."""
    return tmp_path / "log"


@pytest.fixture
def log(root: Path) -> Iterator[DecisionLog]:
    """An open log with fast, non-durable writes for logic tests."""
    with DecisionLog(str(root), sync="never") as opened:
        yield opened


VOTES = {"safety": {"passed": True, "reason": "ok"}, "cost": {"passed": False, "reason": "pricey"}}
SUBJECT = {"agent_id": "a1", "prompt_id": "p1", "goal_type": "plan", "version": "1.2.3"}


def run_py(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run ``python -c``/a script in a real subprocess with this interpreter."""
    env = dict(os.environ, PYTHONPATH=str(HERE))
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, *args], capture_output=True, text=True, env=env, **kwargs
    )


@pytest.fixture(autouse=True)
def signing_key(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test signs with its own key file and keeps readers' caches of its own, never the
    user's."""
    path = tmp_path_factory.mktemp("key") / "signing.key"
    monkeypatch.setenv("REASONING_TRACE_KEY", str(path))
    monkeypatch.setenv("REASONING_TRACE_CURSORS", str(path.parent / "cursors"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(path.parent / "cache"))  # readers' derived state
    monkeypatch.setenv("REASONING_TRACE_CACHE", str(path.parent / "cache"))
    return path


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A running nats-server with JetStream on free loopback ports, killed after the test
    (skips where Debian's nats-server is not installed)."""
    require_server()
    srv = NatsServer(tmp_path / "nats").start()
    yield srv
    srv.kill()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs mounted for the test (needs root, as in CI)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a small filesystem needs root: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)
