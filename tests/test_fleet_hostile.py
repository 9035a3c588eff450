"""The fleet under attack: a poisoned subject never blinds a reader, no node can speak for
another with the example's credentials, a forged key is caught, and a check that compared
nothing fails."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("nats")

from reasoning_trace.checkpoint import Checkpoint
from reasoning_trace.jetstream import checkpoint_subject, decision_subject, key_subject
from reasoning_trace.note import Signer, sign_note

from .natsserver import NatsServer, require_server
from .test_fleet import NODES, record_alternating, rtrace, ship
from .test_replicate import EXAMPLES, fill, replicated, run
from .test_replicate_hostile import publish_raw


def test_a_poisoned_subject_blinds_no_reader(nats_server: NatsServer, tmp_path: Path) -> None:
    """Foreign messages on a node's subject are skipped and reported by tail, query and stats,
    are findings of verify, and never end a tail -f."""
    record_alternating(tmp_path, 10)
    ship(tmp_path, nats_server.url)
    west_line = replicated(nats_server.url, "west")[0]  # a real record, on the wrong subject
    junk = publish_raw(
        nats_server.url, decision_subject("east"), b'{"seq":999999}', b"hello", west_line
    )
    src = ("--source", nats_server.url)

    tail = rtrace(*src, "tail", "-n", "4", "--json")
    assert len(tail.stdout.splitlines()) == 4
    assert f"skipped rtrace.east.decision #{junk[-1]}" in tail.stderr
    found = rtrace(*src, "query", "--format", "json").stdout.splitlines()
    assert len(found) == 20 and len(set(found)) == 20
    query = rtrace(*src, "query", "--format", "json")
    assert all(f"rtrace.east.decision #{seq}" in query.stderr for seq in junk)
    stats = json.loads(rtrace(*src, "stats", "--json").stdout)
    assert stats["total"] == 20
    assert stats["nodes"] == [
        {"node": "east", "total": 10, "approved": 7},
        {"node": "west", "total": 10, "approved": 7},
    ]
    east = json.loads(rtrace(*src, "stats", "--node", "east", "--json").stdout)
    assert east["total"] == 10 and [n["node"] for n in east["nodes"]] == ["east"]

    vkey = str(tmp_path / "east" / "checkpoints" / "vkey")
    verify = rtrace(
        *src,
        "verify",
        "--node",
        "east",
        "--vkey",
        vkey,
        "--allow-open-server",
        "--json",
        check=False,
    )
    assert verify.returncode == 1
    findings = [json.loads(x) for x in verify.stdout.splitlines()]
    foreign = [f for f in findings if f.get("kind") == "foreign_message"]
    assert [f["file"] for f in foreign] == [f"rtrace.east.decision#{seq}" for seq in junk]
    summary = findings[-1]["summary"]
    assert summary["records"] == 10 and summary["signed_size"] == 10  # the rest still checks

    # The poisoned node replicates on, after the foreign messages.
    record_alternating(tmp_path, 2, start=10)
    ship(tmp_path, nats_server.url)
    assert json.loads(rtrace(*src, "stats", "--json").stdout)["total"] == 24


def test_tail_follow_outlives_foreign_messages(nats_server: NatsServer, tmp_path: Path) -> None:
    """A foreign message arriving while tail -f runs is reported, and following goes on."""
    record_alternating(tmp_path, 2)
    ship(tmp_path, nats_server.url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "reasoning_trace", "--source", nats_server.url, "tail", "-f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None and proc.stderr is not None
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        first = [json.loads(lines.get(timeout=30)) for _ in range(4)]
        assert {d["subject"]["round"] for d in first} == {0, 1}
        publish_raw(nats_server.url, decision_subject("west"), b"hello")
        record_alternating(tmp_path, 1, start=2)
        ship(tmp_path, nats_server.url)
        got = [json.loads(lines.get(timeout=30)) for _ in range(2)]
        assert proc.poll() is None  # still following
    finally:
        proc.terminate()
        proc.wait(10)
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert {(d["node"], d["subject"]["round"]) for d in got} == {(n, 2) for n in NODES}
    assert "skipped rtrace.west.decision" in err and "Traceback" not in err


def test_a_forged_key_and_checkpoint_are_caught(nats_server: NatsServer, tmp_path: Path) -> None:
    """Someone publishing a record, a key and a checkpoint as gate-7: verify --source needs a
    key you hold; with it the forged checkpoint is an unknown key; trusting the stream's keys,
    the changed key is a failure."""
    fill(tmp_path / "g7", "gate-7", 5)
    ship_one = ("--dir", str(tmp_path / "g7"), "replicate", "--nats", nats_server.url)
    assert rtrace(*ship_one, "--node", "gate-7", "--once").returncode == 0

    forger = Signer.generate("reasoning-trace/gate-7")
    lines = replicated(nats_server.url, "gate-7")
    record = json.loads(lines[-1])
    record.update(seq=5, id="forged", approved=True)
    forged = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    publish_raw(nats_server.url, decision_subject("gate-7"), forged)
    publish_raw(nats_server.url, key_subject("gate-7"), f"{forger.verifier}\n".encode())
    from reasoning_trace.tree import CompactRange, leaf_hash

    tree = CompactRange()
    for line in [*lines, forged]:
        tree.append(leaf_hash(line))
    note = sign_note(Checkpoint("reasoning-trace/gate-7", 6, tree.root()).body(), [forger])
    publish_raw(nats_server.url, checkpoint_subject("gate-7"), note.encode())

    base = ("--source", nats_server.url, "verify", "--node", "gate-7", "--allow-open-server")
    keyless = rtrace(*base, check=False)
    assert keyless.returncode == 2 and "--vkey" in keyless.stderr

    held = rtrace(*base, "--vkey", str(tmp_path / "g7" / "checkpoints" / "vkey"), check=False)
    assert held.returncode == 1 and "unknown_key" in held.stdout

    trusting = rtrace(*base, "--trust-stream-keys", "--json", check=False)
    assert trusting.returncode == 1
    kinds = {json.loads(x).get("kind") for x in trusting.stdout.splitlines()}
    assert "key_changed" in kinds


def test_a_check_that_compared_nothing_fails(nats_server: NatsServer, tmp_path: Path) -> None:
    """verify --source of a node that never replicated, and verify --witness under a wrong
    node name, exit 1 naming the missing replica."""
    record_alternating(tmp_path, 3)
    ship(tmp_path, nats_server.url)
    trust = ("--trust-stream-keys", "--allow-open-server")
    never = rtrace("--source", nats_server.url, "verify", "--node", "gate-9", *trust, check=False)
    assert never.returncode == 1
    assert "no replica of gate-9 in RTRACE" in never.stderr
    assert "Traceback" not in never.stderr

    east = str(tmp_path / "east")
    wrong = rtrace(
        "--dir",
        east,
        "verify",
        "--witness",
        nats_server.url,
        "--node",
        "gate-9",
        *trust,
        check=False,
    )
    assert wrong.returncode == 1 and "no replica of gate-9 in RTRACE" in wrong.stderr
    default = rtrace("--dir", east, "verify", "--witness", nats_server.url, *trust, check=False)
    assert default.returncode == 1 and "no replica of" in default.stderr


def test_a_source_without_a_scheme_is_taken_and_another_scheme_refused(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """--source HOST:PORT means nats://HOST:PORT; http://… exits 2 with a clear message."""
    record_alternating(tmp_path, 1)
    ship(tmp_path, nats_server.url)
    bare = nats_server.url.removeprefix("nats://")
    assert json.loads(rtrace("--source", bare, "stats", "--json").stdout)["total"] == 2
    http = rtrace("--source", "http://u:pw@127.0.0.1:1", "tail", check=False)
    assert http.returncode == 2 and "is not a NATS URL" in http.stderr
    assert "pw" not in http.stderr and "Traceback" not in http.stderr


def test_the_example_accounts_let_no_node_speak_for_another(tmp_path: Path) -> None:
    """With the shipped accounts, gate-1 cannot publish on gate-2's subjects (the replicator
    says so, exit 2), the reader cannot publish at all, and no password is ever printed."""
    require_server()
    srv = NatsServer(tmp_path / "nats", extra='include "accounts.conf"')
    shutil.copy(EXAMPLES / "accounts.conf", srv.dir)
    srv.start()
    try:

        def url(user: str) -> str:
            """The URL of ``user`` with its example password."""
            return f"nats://{user}:change-me-{user}@127.0.0.1:{srv.port}"

        for node in ("gate-1", "gate-2"):
            fill(tmp_path / node, node, 5)
            args = ("--dir", str(tmp_path / node), "replicate", "--nats", url(node))
            done = rtrace(*args, "--node", node, "--once")
            assert done.returncode == 0, done.stderr

        # gate-1's credentials, claiming to be gate-3: refused, and told so.
        fill(tmp_path / "impostor", "gate-3", 2)
        args = ("--dir", str(tmp_path / "impostor"), "replicate", "--nats", url("gate-1"))
        impostor = rtrace(*args, "--node", "gate-3", "--once", check=False)
        assert impostor.returncode == 2, impostor.stderr
        assert "refuses this user publishing on rtrace.gate-3." in impostor.stderr
        assert "change-me" not in impostor.stderr

        async def forge(js):  # type: ignore[no-untyped-def]
            """Publish on gate-2's subjects with raw client calls; report what landed."""
            landed = []
            for subject in (decision_subject("gate-2"), key_subject("gate-2")):
                try:
                    await js.publish(subject, b"{}", timeout=1)
                    landed.append(subject)
                except Exception as exc:  # noqa: BLE001 -- refused either way; which is shown
                    assert type(exc).__name__ in ("TimeoutError", "NoRespondersError"), exc
            return landed

        assert run(forge, url("gate-1")) == []
        assert run(forge, url("reader")) == []
        assert len(replicated(url("reader"), "gate-2")) == 5

        reader = url("reader")
        vkey = str(tmp_path / "gate-2" / "checkpoints" / "vkey")
        ok = rtrace("--source", reader, "verify", "--node", "gate-2", "--vkey", vkey, "--json")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "change-me-reader" not in ok.stdout + ok.stderr and "reader:***@" in ok.stdout
        assert "open_server" not in ok.stdout
        stats = json.loads(rtrace("--source", reader, "stats", "--json").stdout)
        assert stats["total"] == 10
    finally:
        srv.kill()


def test_verify_source_fails_on_a_server_without_credentials(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """On a server that takes no credentials, verify --source exits 1 saying anyone can
    delete the stream, unless told --allow-open-server."""
    fill(tmp_path / "a", "a", 3)
    rtrace(
        "--dir",
        str(tmp_path / "a"),
        "replicate",
        "--nats",
        nats_server.url,
        "--node",
        "a",
        "--once",
    )
    vkey = str(tmp_path / "a" / "checkpoints" / "vkey")
    base = ("--source", nats_server.url, "verify", "--node", "a", "--vkey", vkey)
    loud = rtrace(*base, check=False)
    assert loud.returncode == 1 and "open_server" in loud.stdout
    assert rtrace(*base, "--allow-open-server").returncode == 0
