"""Comparing a local log with its replica (``compare_with_replica``, ``rtrace verify
--replica``), and the old name of the option, ``--witness``, still accepted with a
deprecation note."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("nats")

import reasoning_trace
from reasoning_trace import DecisionLog
from reasoning_trace.replicate import replicate
from reasoning_trace.verify_replica import compare_with_replica

from .natsserver import NatsServer
from .terminal import on_a_terminal
from .test_fleet import rtrace


def one_node(base: Path, url: str, rounds: int = 5) -> Path:
    """A log of node ``east`` with ``rounds`` decisions, all of it replicated to ``url``."""
    root = base / "east"
    with DecisionLog(str(root), node="east") as log:
        for i in range(rounds):
            log.record("upgrade", True, {"safety": {"passed": True}}, {"round": i})
    replicate(root, url, node="east", until_caught_up=True)
    return root


def test_compare_with_replica_finds_a_record_changed_after_replication(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """The library call passes on the log as replicated, and names the record that was
    changed locally afterwards."""
    root = one_node(tmp_path, nats_server.url)
    kept = (root / "checkpoints" / "vkey").read_text()
    same = compare_with_replica(root, nats_server.url, "east", kept, allow_open_server=True)
    assert same.ok, same.failures
    assert same.records == 5

    (day,) = root.glob("*.jsonl")
    day.write_bytes(day.read_bytes().replace(b'"round":3', b'"round":9'))
    changed = compare_with_replica(root, nats_server.url, "east", kept, allow_open_server=True)
    assert not changed.ok
    altered = [f for f in changed.findings if f.kind == "altered"]
    assert [(f.seq_from, f.seq_to) for f in altered] == [(3, 3)]


def test_the_front_exports_compare_with_replica_and_no_longer_witness() -> None:
    """``compare_with_replica`` is a public name of the package; ``witness`` no longer names
    a comparison: it is the module of the witness that cosigns (``reasoning_trace.Witness``)."""
    assert "compare_with_replica" in reasoning_trace.__all__
    assert reasoning_trace.compare_with_replica is compare_with_replica
    assert "witness" not in reasoning_trace.__all__
    import reasoning_trace.witness as cosigner

    assert not callable(cosigner) and cosigner.Witness is reasoning_trace.Witness


def test_verify_replica_and_its_old_name(nats_server: NatsServer, tmp_path: Path) -> None:
    """``verify --replica URL`` compares the log with its replica; ``--witness URL`` does the
    same, says once on stderr that it is deprecated, and is not shown in ``--help``."""
    root = one_node(tmp_path, nats_server.url)
    vkey = str(root / "checkpoints" / "vkey")
    args = ("--dir", str(root), "verify", "--node", "east", "--vkey", vkey, "--allow-open-server")

    replica = rtrace(*args, "--replica", nats_server.url)
    summary = json.loads(replica.stdout.splitlines()[-1])["summary"]
    assert summary["ok"] is True and summary["records"] == 5
    assert "deprecated" not in replica.stderr
    words = on_a_terminal(None, *args, "--replica", nats_server.url)
    assert words.returncode == 0 and "OK: 5 records" in words.stdout

    old = rtrace(*args, "--witness", nats_server.url)
    assert old.stdout == replica.stdout
    notes = [line for line in old.stderr.splitlines() if "deprecated" in line]
    assert notes == [
        "rtrace: --witness is deprecated; say --replica (it compares this log with its replica)"
    ]

    both = rtrace(*args, "--witness", nats_server.url, "--replica", nats_server.url, check=False)
    assert both.returncode == 2 and "old name of --replica" in both.stderr

    shown = rtrace("verify", "--help").stdout
    assert "--replica" in shown and not re.search(r"--witness\b", shown)  # only --witnesses
