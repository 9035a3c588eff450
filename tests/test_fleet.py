"""Reading a fleet from the stream with the installed ``rtrace``: tail, tail -f, query, stats,
verify --source --node, and verify --witness catching a local rewrite after replication."""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("nats")

from reasoning_trace import DecisionLog
from reasoning_trace.note import Signer
from reasoning_trace.replicate import replicate

from .natsserver import NatsServer
from .terminal import on_a_terminal

NODES = ("east", "west")


def rtrace(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the installed ``rtrace`` and return what it did (asserting success if ``check``)."""
    done = subprocess.run(
        [sys.executable, "-m", "reasoning_trace", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def record_alternating(base: Path, rounds: int, start: int = 0) -> None:
    """Both nodes decide in turn, so their records interleave in time."""
    logs = {n: DecisionLog(str(base / n), node=n) for n in NODES}
    try:
        for i in range(start, start + rounds):
            for n, log in logs.items():
                log.record(
                    "rollback" if i % 4 == 0 else "upgrade",
                    i % 4 != 0,
                    {"safety": {"passed": i % 4 != 0}, "ops": {"passed": True}},
                    {"agent_id": f"{n}-agent", "round": i},
                )
    finally:
        for log in logs.values():
            log.close()


def ship(base: Path, url: str) -> None:
    """Replicate both nodes' logs until the stream holds everything."""
    for n in NODES:
        replicate(base / n, url, node=n, until_caught_up=True)


def test_tail_query_and_stats_across_nodes(nats_server: NatsServer, tmp_path: Path) -> None:
    """tail, query and stats with --source read every node's records, in time order."""
    record_alternating(tmp_path, 40)
    ship(tmp_path, nats_server.url)
    src = ("--source", nats_server.url)

    tail = [json.loads(x) for x in rtrace(*src, "tail", "-n", "6", "--json").stdout.splitlines()]
    assert len(tail) == 6
    assert [d["timestamp"] for d in tail] == sorted(d["timestamp"] for d in tail)
    assert {d["node"] for d in tail} == set(NODES)
    assert {d["subject"]["round"] for d in tail} == {37, 38, 39}  # the newest, by time

    rollbacks = rtrace(*src, "query", "--action", "rollback", "--format", "json").stdout
    found = [json.loads(x) for x in rollbacks.splitlines()]
    assert len(found) == 2 * 10 and all(d["action"] == "rollback" for d in found)
    assert [d["timestamp"] for d in found] == sorted(d["timestamp"] for d in found)
    vetoed = rtrace(*src, "query", "--voter", "safety", "--format", "json").stdout.splitlines()
    assert len(vetoed) == 20

    stats = json.loads(rtrace(*src, "stats", "--json").stdout)
    assert stats["total"] == 80 and stats["approved"] == 60
    assert stats["vetoes"] == [{"voter": "safety", "vetoes": 20}]

    table = rtrace(*src, "tail", "-n", "2").stdout
    assert "node" in table and "east" in table and "west" in table

    refused = rtrace(*src, "record", "--action", "x", "--approved", check=False)
    assert refused.returncode == 2 and "works on a local log" in refused.stderr


def test_tail_follow_interleaves_every_node_live(nats_server: NatsServer, tmp_path: Path) -> None:
    """tail -f with --source prints every node's new records once each, in time order."""
    record_alternating(tmp_path, 3)
    ship(tmp_path, nats_server.url)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reasoning_trace",
            "--source",
            nats_server.url,
            "tail",
            "-n",
            "1",
            "-f",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        # Once the newest record is printed, the follower has read the stream; records
        # replicated afterwards must all arrive, once each, in time order. Records that
        # arrive together are put in time order (those that arrive ``hold`` apart are
        # printed as they come): the follower is paused while both nodes ship, so that
        # their records arrive together however slowly the two replicators run.
        assert json.loads(lines.get(timeout=30))["subject"]["round"] == 2
        record_alternating(tmp_path, 5, start=3)
        proc.send_signal(signal.SIGSTOP)
        try:
            ship(tmp_path, nats_server.url)
        finally:
            proc.send_signal(signal.SIGCONT)
        got = [json.loads(lines.get(timeout=30)) for _ in range(10)]
        with pytest.raises(queue.Empty):
            lines.get(timeout=0.5)  # nothing twice
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
    assert {(d["node"], d["subject"]["round"]) for d in got} == {
        (n, r) for n in NODES for r in range(3, 8)
    }
    assert [d["timestamp"] for d in got] == sorted(d["timestamp"] for d in got)


def test_verify_a_node_from_the_stream_alone(nats_server: NatsServer, tmp_path: Path) -> None:
    """verify --source --node passes with the node's key and fails with a key that did not sign."""
    record_alternating(tmp_path, 30)
    ship(tmp_path, nats_server.url)
    vkey = tmp_path / "east" / "checkpoints" / "vkey"
    open_ok = "--allow-open-server"
    ok = rtrace(
        "--source",
        nats_server.url,
        "verify",
        "--node",
        "east",
        "--vkey",
        str(vkey),
        open_ok,
        "--json",
    )
    summary = json.loads(ok.stdout.splitlines()[-1])["summary"]
    assert summary["ok"] is True and summary["records"] == 30
    assert summary["signed_size"] == 30

    keys = str(Signer.generate("someone-else").verifier)  # a key that did not sign
    wrong = rtrace(
        "--source",
        nats_server.url,
        "verify",
        "--node",
        "east",
        "--vkey",
        keys,
        open_ok,
        check=False,
    )
    assert wrong.returncode == 1
    assert "unknown_key" in wrong.stdout

    # no --node: each node in turn, here with the keys they published, trusted as asked
    every = on_a_terminal(
        None, "--source", nats_server.url, "verify", "--trust-stream-keys", open_ok
    )
    assert every.returncode == 0, every.stderr
    assert "node east:" in every.stdout and "node west:" in every.stdout
    assert every.stdout.count("OK:") == 2
    piped = rtrace("--source", nats_server.url, "verify", "--trust-stream-keys", open_ok)
    summaries = [json.loads(x)["summary"] for x in piped.stdout.splitlines() if "summary" in x]
    assert [s["root"].split()[-1] for s in summaries] == ["east", "west"]
    assert all(s["ok"] for s in summaries)


def test_witness_catches_a_local_rewrite_after_replication(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """A log rewritten and re-signed after replication verifies locally but fails
    verify --witness."""
    record_alternating(tmp_path, 50)
    ship(tmp_path, nats_server.url)
    east = tmp_path / "east"
    kept = tmp_path / "east.vkey"  # the auditor's copy of the node's verifier key
    kept.write_text((east / "checkpoints" / "vkey").read_text())
    witness = ("verify", "--witness", nats_server.url, "--node", "east", "--allow-open-server")
    assert rtrace("--dir", str(east), *witness, "--vkey", str(kept))

    # The host is compromised: the whole log is rewritten, consistently, and re-signed with
    # the node's own key. Locally it verifies; against what it replicated, it does not.
    for item in east.iterdir():
        if item.is_dir():
            shutil.rmtree(item)
        else:
            item.unlink()
    with DecisionLog(str(east), node="east") as log:
        for i in range(50):
            log.record("upgrade", True, {"safety": {"passed": True}}, {"round": i})
    assert rtrace("--dir", str(east), "verify").returncode == 0
    caught = rtrace(
        "--dir", str(east), *witness, "--vkey", str(tmp_path / "east.vkey"), check=False
    )
    assert caught.returncode == 1, caught.stdout
    assert "altered" in caught.stdout and "checkpoint_mismatch" in caught.stdout
    assert json.loads(caught.stdout.splitlines()[-1])["summary"]["ok"] is False


@pytest.mark.parametrize(
    "args",
    [
        ["--source", "nats://127.0.0.1:1", "tail"],
        ["replicate", "--nats", "nats://127.0.0.1:1"],
        ["verify", "--witness", "nats://127.0.0.1:1"],
    ],
)
def test_without_the_nats_extra_the_error_says_what_to_install(
    args: list[str], tmp_path: Path
) -> None:
    """Without nats-py, fleet commands exit 2 naming the extra to install."""
    DecisionLog(str(tmp_path / "log")).close()
    code = (
        "import sys; sys.modules['nats'] = None\n"
        "from reasoning_trace.cli import main\n"
        f"sys.argv = ['rtrace', '--dir', {str(tmp_path / 'log')!r}, *{args!r}]\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert "pip install 'reasoning-trace[nats]'" in done.stderr


def test_recent_finds_each_nodes_last_records_without_reading_everything(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """recent(n) across nodes of very different sizes equals the newest n of a full read."""
    from reasoning_trace.fleet import Fleet

    record_alternating(tmp_path, 3)
    with DecisionLog(str(tmp_path / "east"), node="east") as log:
        for i in range(700):
            log.record("upgrade", True, {}, {"round": 100 + i})
    ship(tmp_path, nats_server.url)
    with Fleet(nats_server.url) as fleet:
        everything = sorted(fleet.decisions(), key=lambda d: d.timestamp)
        assert len(everything) == 706
        for n in (0, 1, 2, 5, 6, 7, 300, 706, 1000):
            expected = everything[-n:] if n else []
            assert [d.line for d in fleet.recent(n)] == [d.line for d in expected], n
