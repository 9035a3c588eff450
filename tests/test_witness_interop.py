"""Interoperability of our witness client, witness and cosigned checkpoints with independent
implementations: aics-witness (a C2SP tlog-witness, PyPI) as a second witness, aics-tlog
(PyPI) as a checker of cosigned checkpoints and quorums, aics-witness's own client driving
our witness, and Go's ``golang.org/x/mod/sumdb/note`` reading the cosigned notes.

aics-witness and aics-tlog need Python >= 3.12: a session fixture makes a virtual
environment for them under ``~/.cache/reasoning-trace-test/aics-venv`` with the first 3.12+
interpreter it finds (PATH, then pyenv's) and installs them from PyPI there; the tests skip
only where no such interpreter exists.
"""

from __future__ import annotations

import base64
import glob
import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reasoning_trace import DecisionLog
from reasoning_trace.checkpoint import Checkpoints
from reasoning_trace.cosignature import CosignerKey
from reasoning_trace.cosigned import Cosigned
from reasoning_trace.verify import verify

from .test_interop import go_check, go_verifier, needs_go
from .test_witness import env, fill, new_log
from .witnesses import cosigned_newest, free_port, newest_note, our_witness, wait_for

__all__ = ["go_verifier"]  # a fixture, used here by name

HERE = Path(__file__).parent
VENV = Path.home() / ".cache" / "reasoning-trace-test" / "aics-venv"


def python312() -> str | None:
    """A Python 3.12 or newer interpreter: on PATH, else one pyenv installed."""
    for name in ("python3.13", "python3.12"):
        found = shutil.which(name)
        if found:
            return found
    pyenv = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.1[2-9]*/bin/python3")))
    return pyenv[-1] if pyenv else None


@pytest.fixture(scope="session")
def aics() -> Path:
    """The bin folder of a virtual environment holding aics-witness and aics-tlog."""
    interpreter = python312()
    if interpreter is None:
        pytest.skip("aics-witness and aics-tlog need Python >= 3.12, and none is installed")
    bin_dir = VENV / "bin"
    ready = (
        subprocess.run(
            [str(bin_dir / "python"), "-c", "import aics_tlog, aics_witness"], capture_output=True
        )
        if (bin_dir / "python").exists()
        else None
    )
    if ready is None or ready.returncode != 0:
        subprocess.run([interpreter, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run(
            [
                str(bin_dir / "pip"),
                "install",
                "-q",
                "--disable-pip-version-check",
                "aics-witness",
                "aics-tlog",
            ],
            check=True,
            timeout=900,
        )
    return bin_dir


def aics_run(aics: Path, request: dict[str, object]) -> dict[str, object]:
    """Run tests/aics_check.py in the aics venv on one JSON request."""
    done = subprocess.run(
        [str(aics / "python"), str(HERE / "aics_check.py")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


class AicsWitness:
    """An aics-witness in a folder of its own, serving on a loopback port."""

    def __init__(self, aics: Path, folder: Path, name: str) -> None:
        self.aics, self.folder, self.port = aics, folder, free_port()
        self.config = folder / "witness.json"
        self.url = f"http://127.0.0.1:{self.port}"
        made = self._cli("init", "--name", name, "--listen", f"127.0.0.1:{self.port}")
        self.key = CosignerKey.parse(made.stdout.strip())
        self.process: subprocess.Popen[bytes] | None = None

    def _cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``aics-witness COMMAND --config FILE ARGS``, which must succeed."""
        done = subprocess.run(
            [str(self.aics / "aics-witness"), args[0], "--config", str(self.config), *args[1:]],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done

    def line(self) -> str:
        """Its line in a witnesses file."""
        return f"{self.key} {self.url}"

    def add_log(self, vkey: str) -> None:
        """Trust our log (its origin is its key's name)."""
        self._cli("add-log", "--origin", vkey.split("+", 1)[0], "--vkey", vkey)

    def start(self) -> AicsWitness:
        """Serve, and wait until it answers."""
        log = open(self.folder / "serve.log", "ab")  # noqa: SIM115 -- the process's stderr
        self.process = subprocess.Popen(
            [str(self.aics / "aics-witness"), "serve", "--config", str(self.config)],
            stderr=log,
        )
        log.close()
        wait_for(self.healthy, "aics-witness to listen")
        return self

    def healthy(self) -> bool:
        """Whether it answers /healthz."""
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill9(self) -> None:
        """kill -9 it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """Stop it if it runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def aics_witness(aics: Path, tmp_path: Path) -> Iterator[AicsWitness]:
    """An aics-witness, stopped after the test."""
    witness = AicsWitness(aics, tmp_path / "aics", "witness.test/aics")
    yield witness
    witness.stop()


def test_aics_witness_cosigns_across_restarts_of_both(
    root: Path, tmp_path: Path, aics: Path, aics_witness: AicsWitness
) -> None:
    """Our log with two witnesses, aics-witness and ours, gets both cosignatures, before and
    after kill -9 of aics-witness and a restart of the log; aics-tlog accepts the note with a
    quorum of 2, and so does our verify."""
    vkey = new_log(root)
    aics_witness.add_log(vkey)
    aics_witness.start()
    with our_witness(tmp_path / "ours", "witness.test/ours") as ours:
        ours.witness.add_log(vkey)
        (root / "witnesses").write_text(f"{aics_witness.line()}\n{ours.line()}\n")
        options = {"sync": "never", "checkpoint_every": 10, "witness_backoff": (0.05, 0.5)}
        with DecisionLog(str(root), **options) as log:  # type: ignore[arg-type]
            fill(log, 25)
        for name in (aics_witness.key.name, ours.key.name):
            wait_for(lambda n=name: cosigned_newest(root, n), f"{name} cosigning size 25")
        aics_witness.kill9()
        aics_witness.start()
        with DecisionLog(str(root), **options) as log:  # type: ignore[arg-type]
            fill(log, 25)
        for name in (aics_witness.key.name, ours.key.name):
            done = wait_for(lambda n=name: cosigned_newest(root, n), f"{name} cosigning 50")
            assert done.size == 50
    note = newest_note(root)
    checked = aics_run(
        aics,
        {
            "op": "verify",
            "note": note,
            "log_vkey": vkey,
            "witness_vkeys": [str(aics_witness.key), str(ours.key)],
            "quorum": 2,
        },
    )
    assert checked["ok"] is True, checked
    assert set(checked["witnesses"]) == {"witness.test/aics", "witness.test/ours"}  # type: ignore[arg-type]
    report = verify(root, vkey, witnesses=[aics_witness.key, ours.key], quorum=2)
    assert report.ok and report.witnessed_size == 50, report.findings
    assert Cosigned(root).refusals() == []


@needs_go
def test_go_reads_the_cosigned_notes(root: Path, tmp_path: Path, go_verifier: Path) -> None:
    """Go's note.Open, with only the log's key, accepts the note with the witness lines (they
    are signatures by unknown keys), and an inclusion proof in it checks out."""
    vkey = new_log(root)
    with our_witness(tmp_path / "w", "witness.test/w") as w:
        w.witness.add_log(vkey)
        with DecisionLog(str(root), sync="never", checkpoint_every=0, witnesses=[w.line()]) as log:
            fill(log, 9)
            log.checkpoint()  # signed: the client is woken
            wait_for(lambda: cosigned_newest(root, w.key.name), "the cosignature")
            note = newest_note(root)
            assert note.count("\n\u2014 ") == 2
            proof = log.prove(4).to_json()
            line = log.get(4).line
    done = go_check(
        go_verifier,
        {"vkey": vkey, "note": note, "line": base64.b64encode(line).decode(), "inclusion": proof},
    )
    assert done.stdout.strip() == "ok", done.stdout


def test_aics_witness_refuses_a_fork_and_a_rollback(
    root: Path, tmp_path: Path, aics_witness: AicsWitness
) -> None:
    """After aics-witness cosigned 20 records, a copy rewritten from record 10 is refused
    (422 or 409) and fails ``verify``; a copy rolled back to 10 records fails ``verify
    --trusted`` with aics-witness's monitoring URL, and is refused once it grows again."""
    vkey = new_log(root)
    aics_witness.add_log(vkey)
    aics_witness.start()
    (root / "witnesses").write_text(aics_witness.line() + "\n")
    options = {"sync": "never", "checkpoint_every": 10, "witness_backoff": (0.05, 0.5)}
    with DecisionLog(str(root), **options) as log:  # type: ignore[arg-type]
        fill(log, 10)
    wait_for(lambda: cosigned_newest(root, aics_witness.key.name), "size 10 cosigned")
    fork, rolled = tmp_path / "fork", tmp_path / "rolled"
    shutil.copytree(root, fork)
    shutil.copytree(root, rolled)
    with DecisionLog(str(root), **options) as log:  # type: ignore[arg-type]
        fill(log, 10)
    wait_for(lambda: cosigned_newest(root, aics_witness.key.name), "size 20 cosigned")

    with DecisionLog(str(fork), **options) as log:  # type: ignore[arg-type]
        fill(log, 15, action="rewritten")
    refused = wait_for(lambda: Cosigned(fork).refusals(), "aics-witness refusing the fork")
    assert refused[0].status in (409, 422), refused
    assert "witness_refused" in verify(fork).kinds()

    checked = subprocess.run(
        [*_rtrace(), "--dir", str(rolled), "verify", "--trusted", aics_witness.url],
        capture_output=True,
        text=True,
        env=env(),
        timeout=120,
    )
    assert checked.returncode == 1, checked.stderr
    kinds = {json.loads(line).get("kind") for line in checked.stdout.splitlines()}
    assert "rollback" in kinds
    with DecisionLog(str(rolled), **options) as log:  # type: ignore[arg-type]
        fill(log, 5, action="after-rollback")
    refusal = wait_for(lambda: Cosigned(rolled).refusals(), "aics-witness refusing the rollback")
    assert refusal[0].status == 409 and refusal[0].size == 15
    assert Checkpoints(root).latest().size == 20  # type: ignore[union-attr]


def _rtrace() -> list[str]:
    """The ``rtrace`` command."""
    from .terminal import rtrace_command

    return rtrace_command()


def test_aics_clients_drive_our_witness(root: Path, tmp_path: Path, aics: Path) -> None:
    """aics-witness's own client gets cosignatures from our witness (from size 0, then with a
    consistency proof) and aics-tlog verifies them with our witness's key; our witness
    refuses that client a smaller tree."""
    vkey = new_log(root)
    with DecisionLog(str(root), sync="never", checkpoint_every=0) as log:
        fill(log, 6)
        first = log.checkpoint()
        fill(log, 9)
        second = log.checkpoint()
        proof = [base64.b64encode(h).decode() for h in log.consistency(6, 15).proof]
    with our_witness(tmp_path / "w", "witness.test/w") as w:
        w.witness.add_log(vkey)
        fed = aics_run(
            aics,
            {
                "op": "feed",
                "url": w.url,
                "witness_vkey": str(w.key),
                "steps": [
                    {"note": first, "old": 0, "proof": []},
                    {"note": second, "old": 6, "proof": proof},
                    {"note": first, "old": 6, "proof": []},
                ],
            },
        )
    results = fed["results"]
    assert "line" in results[0] and "line" in results[1], results  # type: ignore[index]
    assert results[2]["error"] == "WitnessAhead", results  # type: ignore[index]
    checked = aics_run(
        aics,
        {
            "op": "verify",
            "note": results[1]["note"],  # type: ignore[index]
            "log_vkey": vkey,
            "witness_vkeys": [str(w.key)],
            "quorum": 1,
        },
    )
    assert checked["ok"] is True, checked
    note = str(results[1]["note"])  # type: ignore[index]
    body, _, sigs = note.partition("\n\n")
    tampered = body.replace("\n15\n", "\n16\n") + "\n\n" + sigs
    refused = aics_run(
        aics,
        {
            "op": "verify",
            "note": tampered,
            "log_vkey": vkey,
            "witness_vkeys": [str(w.key)],
            "quorum": 1,
        },
    )
    assert refused["ok"] is False
