"""Witnesses (C2SP tlog-witness, tlog-cosignature): our witness answers as the standard says
and keeps its word across restarts; a log gets cosignatures without ever waiting for them;
a witness that is down, hung, killed mid-request or offline for an hour costs the log nothing
and catches up; a forked or rolled-back log is refused and fails ``verify``.

Real servers on loopback ports; waits are on conditions with deadlines.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import reasoning_trace
from reasoning_trace import DecisionLog
from reasoning_trace.checkpoint import Checkpoint, Checkpoints
from reasoning_trace.cosignature import Cosigner, CosignerKey, cosignatures
from reasoning_trace.cosigned import Cosigned
from reasoning_trace.errors import QuorumError, SignatureError, UsageError
from reasoning_trace.keys import init_key
from reasoning_trace.note import Signer, Verifier, sign_note
from reasoning_trace.tlog_witness import SIZE_TYPE, format_add_checkpoint, origin_hash
from reasoning_trace.verify import verify
from reasoning_trace.witness import Witness
from reasoning_trace.witness_policy import check_quorum, fetch_cosigned, parse_witnesses

from .terminal import rtrace_command
from .witnesses import cosigned_newest, free_port, newest_note, our_witness, wait_for

HERE = Path(__file__).parent
SRC = Path(reasoning_trace.__file__).parent.parent


def env() -> dict[str, str]:
    """The environment of a subprocess that runs this checkout's code."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE.parent)])}


def new_log(root: Path) -> str:
    """Create the log root and its signing key; return its verifier key."""
    root.mkdir(parents=True)
    return str(init_key(root).verifier)


def fill(log: DecisionLog, n: int, action: str = "gate") -> None:
    """Record ``n`` decisions."""
    for i in range(n):
        log.record(action, i % 2 == 0, {"safety": {"passed": True}}, {"i": i})


# --- the cosignature format ---------------------------------------------------------------


def test_cosignature_is_the_standard_message_and_key_id() -> None:
    """A cosignature signs "cosignature/v1", the time and the body; its key id is SHA-256 of
    name, newline, 0x04 and the key; a changed body or time does not verify."""
    import base64
    import hashlib

    cosigner = Cosigner.generate("witness.test/w")
    key = cosigner.key
    assert CosignerKey.parse(str(key)) == key
    want = hashlib.sha256(b"witness.test/w\n\x04" + key.public).digest()[:4]
    assert key.id == int.from_bytes(want, "big")
    body = "example.com/log\n5\n" + base64.b64encode(b"\x01" * 32).decode() + "\n"
    line = cosigner.cosign(body, 1_700_000_000)
    blob = base64.b64decode(line.split()[2])
    assert blob[:4] == want and int.from_bytes(blob[4:12], "big") == 1_700_000_000
    assert key.verify(body, blob[4:]) == 1_700_000_000
    with pytest.raises(SignatureError):
        key.verify(body.replace("\n5\n", "\n6\n"), blob[4:])
    forged = blob[4:5] + bytes([blob[5] ^ 1]) + blob[6:]  # another time
    with pytest.raises(SignatureError):
        key.verify(body, forged)
    with pytest.raises(reasoning_trace.NoteError):
        CosignerKey.parse(str(Signer.generate("log.test/a").verifier))  # a log key (0x01)


# --- our witness, by the standard ---------------------------------------------------------


def test_witness_answers_as_the_standard_says(
    root: Path, tmp_path: Path, signing_key: Path
) -> None:
    """404 unknown log, 400 malformed or old > size, 403 a bad signature, 409 with the size
    it holds, 422 a bad proof, 409 another root at its size; evidence kept; 200 cosigns."""
    vkey = new_log(root)
    with DecisionLog(str(root), sync="never", checkpoint_every=0) as log:
        fill(log, 5)
        note5 = log.checkpoint()
        fill(log, 7)
        note12 = log.checkpoint()
        proof = log.consistency(5, 12).proof
    Witness.init(tmp_path / "w", "witness.test/w")
    witness = Witness(tmp_path / "w")
    assert witness.add_checkpoint(format_add_checkpoint(0, [], note5)).status == 404
    witness.add_log(vkey)
    origin = note5.split("\n", 1)[0]
    assert witness.add_checkpoint(b"old 0\n").status == 400
    assert witness.add_checkpoint(format_add_checkpoint(9, [], note5)).status == 400
    tampered = note5.replace("\n5\n", "\n4\n", 1)
    assert witness.add_checkpoint(format_add_checkpoint(0, [], tampered)).status == 403

    first = witness.add_checkpoint(format_add_checkpoint(0, [], note5))
    assert first.status == 200
    text = note5.split("\n\n")[0] + "\n"
    assert witness.key.verify(text, __import__("base64").b64decode(first.body.split()[2])[4:])

    stale = witness.add_checkpoint(format_add_checkpoint(0, [], note12))
    assert (stale.status, stale.body, stale.content_type) == (409, b"5\n", SIZE_TYPE)
    bad = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
    assert witness.add_checkpoint(format_add_checkpoint(5, bad, note12)).status == 422
    assert witness.add_checkpoint(format_add_checkpoint(5, proof, note12)).status == 200

    restarted = Witness(tmp_path / "w")  # what it cosigned is read back from disk
    assert restarted.state(origin).size == 12  # type: ignore[union-attr]
    smaller = restarted.add_checkpoint(format_add_checkpoint(5, [], note5))
    assert (smaller.status, smaller.body) == (409, b"12\n")
    signer = Signer.parse(signing_key.read_text())
    other = sign_note(Checkpoint(origin, 12, b"\x07" * 32).body(), [signer])
    fork = restarted.add_checkpoint(format_add_checkpoint(12, [], other))
    assert (fork.status, fork.body) == (409, b"12\n")
    assert restarted.state(origin).size == 12  # type: ignore[union-attr]
    kinds = [e["status"] for e in restarted.evidence(origin)]
    assert kinds == [422, 409, 409]  # the bad proof, the smaller tree, another root at 12


def test_racing_requests_never_roll_the_witness_back(root: Path, tmp_path: Path) -> None:
    """Requests for growing sizes sent at once from many threads leave the largest cosigned:
    the old-size check and the write are one step."""
    from concurrent.futures import ThreadPoolExecutor

    vkey = new_log(root)
    notes = {}
    with DecisionLog(str(root), sync="never", checkpoint_every=0) as log:
        for size in range(1, 21):
            fill(log, 1)
            notes[size] = log.checkpoint()
        proofs = {s: log.consistency(1, s).proof for s in range(2, 21)}
    Witness.init(tmp_path / "w", "witness.test/w")
    witness = Witness(tmp_path / "w")
    witness.add_log(vkey)
    assert witness.add_checkpoint(format_add_checkpoint(0, [], notes[1])).status == 200
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda s: witness.add_checkpoint(format_add_checkpoint(1, proofs[s], notes[s])),
                range(2, 21),
            )
        )
    assert sum(a.status == 200 for a in answers) == 1  # after one, the old size is stale
    won = next(s for s, a in zip(range(2, 21), answers, strict=True) if a.status == 200)
    state = witness.state(notes[1].split("\n", 1)[0])
    assert state is not None and state.size == won


# --- a log and its witnesses ----------------------------------------------------------------


def test_two_witnesses_cosign_and_verify_counts_the_quorum(root: Path, tmp_path: Path) -> None:
    """A log with two witnesses gets both cosignatures on its newest checkpoint; verify with a
    quorum of 2 passes and says how far the log is witnessed; a quorum they cannot meet fails;
    a kept cosignature that was edited is a failure."""
    vkey = new_log(root)
    with (
        our_witness(tmp_path / "w1", "witness.test/w1") as w1,
        our_witness(tmp_path / "w2", "witness.test/w2") as w2,
    ):
        w1.witness.add_log(vkey)
        w2.witness.add_log(vkey)
        (root / "witnesses").write_text(f"# the log's witnesses\n{w1.line()}\n{w2.line()}\n")
        with DecisionLog(str(root), sync="never", checkpoint_every=10) as log:
            fill(log, 26)
        for w in (w1, w2):
            wait_for(lambda w=w: cosigned_newest(root, w.key.name), f"{w.key.name} cosigning")
        note = newest_note(root)
        checkpoint, found = check_quorum(note, [Verifier.parse(vkey)], [w1.key, w2.key], 2)
        assert checkpoint.size == 26 and {c.key.name for c in found} == {w1.key.name, w2.key.name}
        assert fetch_cosigned(w1.url, checkpoint.origin) == w1.witness.latest(
            origin_hash(checkpoint.origin)
        )
    report = verify(root, witnesses=[w1.key, w2.key], quorum=2)
    assert report.ok and report.witnessed_size == 26, report.findings
    stranger = Cosigner.generate("witness.test/never").key
    with pytest.raises(QuorumError):
        check_quorum(note, [Verifier.parse(vkey)], [w1.key, stranger], 2)
    lonely = verify(root, witnesses=[stranger], quorum=1)
    assert not lonely.ok and "no_quorum" in lonely.kinds()
    with pytest.raises(UsageError):
        verify(root, witnesses=[w1.key], quorum=2)
    kept = root / "checkpoints" / "cosignatures.jsonl"
    rows = [json.loads(line) for line in kept.read_text().splitlines()]
    line = rows[-1]["line"]
    rows[-1]["line"] = line[:-12] + ("B" if line[-12] == "A" else "A") + line[-11:]
    kept.write_text("".join(json.dumps(r) + "\n" for r in rows))
    edited = verify(root, witnesses=[w1.key, w2.key], quorum=1)
    assert "bad_cosignature" in edited.kinds() and not edited.ok


def test_record_never_waits_for_a_hung_witness(root: Path, tmp_path: Path) -> None:
    """A witness that accepts connections and never answers costs ``record`` nothing, and
    ``close`` waits for it no longer than its drain time."""
    vkey = new_log(root)
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)  # never accepted, never answered
    key = Cosigner.generate("witness.test/hung").key
    url = f"http://127.0.0.1:{hole.getsockname()[1]}"
    try:
        log = DecisionLog(
            str(root),
            sync="never",
            checkpoint_every=10,
            witnesses=[f"{key} {url}"],
            witness_drain=0.5,
        )
        slowest = 0.0
        for i in range(300):
            started = time.perf_counter()
            log.record("gate", True, {}, {"i": i})
            slowest = max(slowest, time.perf_counter() - started)
        started = time.perf_counter()
        log.close()
        closing = time.perf_counter() - started
    finally:
        hole.close()
    assert slowest < 0.5, f"a record took {slowest:.3f}s"
    assert closing < 3.0, f"close took {closing:.3f}s"
    assert Checkpoints(root).latest().size == 300  # type: ignore[union-attr]
    assert verify(root, vkey).ok


def test_a_witness_offline_for_an_hour_catches_up(root: Path, tmp_path: Path) -> None:
    """A witness that goes away for an hour of records (an injected clock: no real waiting)
    gets one request when it is back: the newest checkpoint, proven from what it cosigned."""
    vkey = new_log(root)
    port = free_port()
    state = tmp_path / "w"
    now = [1_790_000_000 * 10**9]

    def clock() -> int:
        return now[0]

    with our_witness(state, "witness.test/w", port) as w:
        w.witness.add_log(vkey)
        log = DecisionLog(
            str(root),
            sync="never",
            checkpoint_every=50,
            clock=clock,
            witnesses=[w.line()],
            witness_backoff=(3600.0, 3600.0),
        )
        fill(log, 50)
        wait_for(lambda: cosigned_newest(root, w.key.name), "the first cosignature")
    for i in range(600):  # an hour of records, six seconds apart, the witness away
        now[0] += 6 * 10**9
        log.record("gate", True, {}, {"i": i})
    cursor = json.loads((root / ".rtrace" / "witnesses.json").read_text())["witness.test/w"]
    assert cursor["cosigned"] == 50 and "cannot reach" in cursor["error"]
    with our_witness(state, "witness.test/w", port) as w:
        fill(log, 50)  # the next checkpoint wakes the client
        done = wait_for(lambda: cosigned_newest(root, w.key.name), "the catch-up")
        assert done.size == 700
        origin = done.note.split("\n", 1)[0]
        assert w.witness.state(origin).size == 700  # type: ignore[union-attr]
        log.close()


def test_a_witness_killed_mid_request_keeps_its_word(root: Path, tmp_path: Path) -> None:
    """kill -9 of a witness after it stored a checkpoint and before it answered: restarted
    (``rtrace witness serve``), it names the size it stored (409), gets the proof from there
    and cosigns; the log never noticed more than a retry."""
    vkey = new_log(root)
    state, port, marker = tmp_path / "w", free_port(), tmp_path / "persisted"
    key = Witness.init(state, "witness.test/w")
    Witness(state).add_log(vkey)
    hanging = subprocess.Popen(
        [sys.executable, str(HERE / "witness_proc.py"), str(state), str(port), str(marker)],
        env=env(),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(url), "the witness to listen")
        log = DecisionLog(
            str(root),
            sync="never",
            checkpoint_every=10,
            witnesses=[f"{key} {url}"],
            witness_backoff=(0.05, 0.2),
        )
        fill(log, 10)
        wait_for(marker.exists, "the witness to store the checkpoint")
        hanging.send_signal(signal.SIGKILL)
        hanging.wait(10)
        assert marker.read_text() == "10"
        served = subprocess.Popen(
            [*rtrace_command(), "witness", "serve", "--state", str(state), "--port", str(port)],
            env=env(),
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: _healthy(url), "the restarted witness")
            fill(log, 10)
            done = wait_for(lambda: cosigned_newest(root, key.name), "the cosignature")
            assert done.size == 20
            log.close()
        finally:
            served.terminate()
            served.wait(10)
    finally:
        if hanging.poll() is None:
            hanging.kill()
    assert Witness(state).state(done.note.split("\n", 1)[0]).size == 20  # type: ignore[union-attr]
    assert Cosigned(root).refusals() == []


def _healthy(url: str) -> bool:
    """Whether the witness at ``url`` answers /healthz."""
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# --- forks and rollbacks ------------------------------------------------------------------


def test_a_fork_is_refused_and_a_rollback_fails_against_the_witness(
    root: Path, tmp_path: Path
) -> None:
    """A copy of the log taken at 10 records and rewritten after the witness cosigned 20 is
    refused by the witness (kept as evidence there, and a ``verify`` failure here); the copy
    left at 10 records passes ``verify`` alone and fails ``verify --trusted <witness URL>``."""
    vkey = new_log(root)
    copy, fork = tmp_path / "copy", tmp_path / "fork"
    with our_witness(tmp_path / "w", "witness.test/w") as w:
        w.witness.add_log(vkey)
        options = {"sync": "never", "checkpoint_every": 10, "witnesses": [w.line()]}
        with DecisionLog(str(root), **options) as log:  # type: ignore[arg-type]
            fill(log, 10)
        wait_for(lambda: cosigned_newest(root, w.key.name), "size 10 cosigned")
        shutil.copytree(root, copy)
        shutil.copytree(root, fork)
        with DecisionLog(str(root), **options) as log:  # type: ignore[arg-type]
            fill(log, 10)
        wait_for(lambda: cosigned_newest(root, w.key.name), "size 20 cosigned")
        with DecisionLog(str(fork), **options) as log:  # type: ignore[arg-type]
            fill(log, 15, action="rewritten")
        refusals = wait_for(lambda: Cosigned(fork).refusals(), "the fork's refusal")
        assert refusals[0].witness == w.key.name and refusals[0].status in (409, 422)
        origin = Checkpoints(root).origin()
        assert origin is not None and w.witness.evidence(origin)
        assert w.witness.state(origin).size == 20  # type: ignore[union-attr]

        forked = verify(fork)
        assert not forked.ok and "witness_refused" in forked.kinds()
        assert verify(copy).ok  # a rolled-back log is consistent with itself
        done = subprocess.run(
            [*rtrace_command(), "--dir", str(copy), "verify", "--trusted", w.url],
            capture_output=True,
            text=True,
            env=env(),
            timeout=120,
        )
    assert done.returncode == 1, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert "rollback" in {r.get("kind") for r in rows}
    assert rows[-1]["summary"]["ok"] is False


# --- the command line -----------------------------------------------------------------------


def rtrace(*args: str) -> subprocess.CompletedProcess[str]:
    """``rtrace args`` piped."""
    return subprocess.run(
        [*rtrace_command(), *args], capture_output=True, text=True, env=env(), timeout=120
    )


def test_witness_commands_and_verify_options(root: Path, tmp_path: Path) -> None:
    """``witness init`` prints the cosigner key, ``add-log`` trusts a log, ``push`` sends the
    newest checkpoint; ``verify --witnesses --quorum`` reports the witnessed size; bad
    witness options exit 2 with a reason and no traceback."""
    vkey = new_log(root)
    state = tmp_path / "w"
    made = rtrace("witness", "init", "--state", str(state), "--name", "witness.test/cli")
    assert made.returncode == 0, made.stderr
    key = CosignerKey.parse(json.loads(made.stdout)["cosigner_key"])
    assert rtrace("witness", "add-log", "--state", str(state), vkey).returncode == 0
    assert rtrace("witness", "add-log", "--state", str(state), "nonsense").returncode == 2
    with DecisionLog(str(root), sync="never") as log:
        fill(log, 7)
    with our_witness(state, "witness.test/cli") as w:
        (root / "witnesses").write_text(w.line() + "\n")
        pushed = rtrace("--dir", str(root), "witness", "push")
        assert pushed.returncode == 0, pushed.stderr
        assert json.loads(pushed.stdout) == {
            "witness": "witness.test/cli",
            "state": "cosigned",
            "size": 7,
            "message": "",
        }
    policy = tmp_path / "policy"
    policy.write_text(f"{key}\n")
    done = rtrace("--dir", str(root), "verify", "--witnesses", str(policy), "--quorum", "1")
    assert done.returncode == 0, done.stdout
    assert json.loads(done.stdout.splitlines()[-1])["summary"]["witnessed_size"] == 7
    bundle = tmp_path / "bundle"
    assert rtrace("--dir", str(root), "export", "--bundle", str(bundle)).returncode == 0
    ok = rtrace("verify-bundle", str(bundle), "--witnesses", str(policy))
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    other = tmp_path / "other"
    other.write_text(f"{Cosigner.generate('witness.test/x').key}\n")
    short = rtrace("verify-bundle", str(bundle), "--witnesses", str(other))
    assert short.returncode == 1 and "cosignature" in short.stderr
    for bad in (
        ("verify", "--quorum", "1"),
        ("verify", "--witnesses", str(policy), "--quorum", "2"),
        ("verify", "--witnesses", str(tmp_path / "missing")),
        ("verify", "--witness", "http://127.0.0.1:1"),
    ):
        refused = rtrace("--dir", str(root), *bad)
        assert refused.returncode == 2, (bad, refused.stdout, refused.stderr)
        assert "Traceback" not in refused.stderr and refused.stderr.strip()
    alias = rtrace("--dir", str(root), "verify", "--witness", "http://127.0.0.1:1")
    assert "--replica" in alias.stderr and "--witnesses" in alias.stderr


def test_witnesses_file_lines_are_checked() -> None:
    """A witnesses file names a cosigner key and an optional URL a line; a log's key, a bad
    URL or a witness named twice is refused with the line."""
    key = Cosigner.generate("witness.test/a").key
    found = parse_witnesses(f"# comment\n{key} http://127.0.0.1:7380/\n\n")
    assert found[0].key == key and found[0].url == "http://127.0.0.1:7380"
    for text in (
        str(Signer.generate("log.test/a").verifier),
        f"{key} ftp://host",
        f"{key}\n{key}",
        f"{key} http://a http://b",
    ):
        with pytest.raises(UsageError, match="line"):
            parse_witnesses(text)
    assert cosignatures("o\n1\n" + "A" * 43 + "=\n\n\u2014 o AAAAAAAA\n", [key]) == []


def test_the_api_serves_the_witnessed_checkpoint(root: Path, tmp_path: Path) -> None:
    """``GET /v1/checkpoint/witnessed`` serves the newest checkpoint the log's witnesses
    cosigned, which a client checks with its own policy; a quorum they cannot meet is 400."""
    pytest.importorskip("uvicorn")
    from .test_server import READ, auth, serving

    vkey = new_log(root)
    with our_witness(tmp_path / "w", "witness.test/w") as w:
        w.witness.add_log(vkey)
        (root / "witnesses").write_text(w.line() + "\n")
        with DecisionLog(str(root), sync="never", checkpoint_every=0) as log:
            fill(log, 12)
        wait_for(lambda: cosigned_newest(root, w.key.name), "the cosignature")
    with serving(root) as (url, _):
        got = httpx.get(f"{url}/v1/checkpoint/witnessed", headers=auth(READ), timeout=10)
        assert got.status_code == 200, got.text
        checkpoint, _found = check_quorum(got.text, [Verifier.parse(vkey)], [w.key], 1)
        assert checkpoint.size == 12
        two = httpx.get(f"{url}/v1/checkpoint/witnessed?quorum=2", headers=auth(READ), timeout=10)
        assert two.status_code == 400 and "quorum" in two.text
