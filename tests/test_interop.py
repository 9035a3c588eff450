"""A third-party verifier accepts our checkpoints and proofs: Go's sumdb/note and tlog.

Go and golang.org/x/mod come from Debian (golang-go, golang-golang-x-mod-dev; scripts/test
installs them) and run in GOPATH mode, offline.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reasoning_trace import DecisionLog

from .conftest import HERE

GOPATH = "/usr/share/gocode"
needs_go = pytest.mark.skipif(
    shutil.which("go") is None or not Path(GOPATH, "src/golang.org/x/mod/sumdb").is_dir(),
    reason="needs Debian's golang-go and golang-golang-x-mod-dev (scripts/test installs them)",
)


@pytest.fixture(scope="module")
def go_verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/go/verify.go built once with Go's own note and tlog packages."""
    out = tmp_path_factory.mktemp("go") / "verify"
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": GOPATH,
        "GOCACHE": str(out.parent / "cache"),
        "GOFLAGS": "",
    }
    subprocess.run(
        ["go", "build", "-o", str(out), str(HERE / "go" / "verify.go")],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    return out


def go_check(binary: Path, payload: dict[str, object]) -> subprocess.CompletedProcess[str]:
    """Run the Go verifier on a JSON payload."""
    return subprocess.run(
        [str(binary)], input=json.dumps(payload), capture_output=True, text=True, timeout=60
    )


@needs_go
def test_go_accepts_checkpoints_and_proofs(root: Path, go_verifier: Path) -> None:
    """Go's note.Open, tlog.CheckRecord and tlog.CheckTree accept every proof of a small log."""
    with DecisionLog(str(root), sync="never", checkpoint_every=0) as log:
        first = [log.record("a", True, {}, {"i": i}) for i in range(13)]
        old_note = log.checkpoint()
        rest = [log.record("b", False, {"v": {"passed": False}}, {"i": i}) for i in range(44)]
        note = log.checkpoint()
        vkey = (root / "checkpoints" / "vkey").read_text().strip()
        consistency = log.consistency(13, 57).to_json()
        for d in [*first, *rest]:
            proof = log.prove(d.seq)
            done = go_check(
                go_verifier,
                {
                    "vkey": vkey,
                    "note": note,
                    "line": base64.b64encode(d.line).decode(),
                    "inclusion": proof.to_json(),
                    "old_note": old_note,
                    "consistency": consistency,
                },
            )
            assert done.stdout.strip() == "ok", (d.seq, done.stdout)


@needs_go
def test_go_rejects_a_tampered_record(root: Path, go_verifier: Path) -> None:
    """The same Go verifier refuses a proof for an edited record line."""
    with DecisionLog(str(root), sync="never") as log:
        d = [log.record("a", True, {}, {"i": i}) for i in range(5)][2]
        log.checkpoint()
        proof = log.prove(d.seq).to_json()
        vkey = (root / "checkpoints" / "vkey").read_text().strip()
    forged = d.line.replace(b'"approved":true', b'"approved":false')
    done = go_check(
        go_verifier,
        {
            "vkey": vkey,
            "note": proof["checkpoint"],
            "line": base64.b64encode(forged).decode(),
            "inclusion": proof,
        },
    )
    assert done.returncode == 1 and "inclusion" in done.stdout
