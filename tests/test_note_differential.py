"""Signed checkpoints parsed as Go parses them: the same verdict as ``note.Open`` + ``ParseTree``.

Hypothesis generates notes (valid, mutated and adversarial); each goes to our
``open_checkpoint`` and to tests/go/noteverdict.go, built with Debian's golang.org/x/mod, and the
two must agree: both accept with the same size and root, or both refuse.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reasoning_trace.checkpoint import Checkpoint, open_checkpoint
from reasoning_trace.errors import ReasoningTraceError
from reasoning_trace.note import Signer, sign_note

from .conftest import HERE
from .test_interop import GOPATH, needs_go

ORIGIN = "example.org/log/1234"  # as long as "go.sum database tree" (see noteverdict.go)
SIGNER = Signer(ORIGIN, bytes(range(32)))
OTHER = Signer("other.example/key", bytes(range(1, 33)))
VKEY = str(SIGNER.verifier)
ROOT = base64.b64encode(bytes(range(32))).decode()


class GoVerdicts:
    """One long-running Go process answering a verdict per note, one line in, one line out."""

    def __init__(self, binary: Path) -> None:
        self.proc = subprocess.Popen(
            [str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def __call__(self, note: bytes) -> str:
        """Go's verdict on ``note``: ``accept <size> <root>`` or ``reject <why>``."""
        assert self.proc.stdin and self.proc.stdout
        request = {"vkey": VKEY, "note": base64.b64encode(note).decode()}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        """End the Go process."""
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def go_verdict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoVerdicts]:
    """tests/go/noteverdict.go, built once, offline, in GOPATH mode."""
    out = tmp_path_factory.mktemp("go") / "noteverdict"
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": GOPATH,
        "GOCACHE": str(out.parent / "cache"),
        "GOFLAGS": "",
    }
    subprocess.run(
        ["go", "build", "-o", str(out), str(HERE / "go" / "noteverdict.go")],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    verdicts = GoVerdicts(out)
    yield verdicts
    verdicts.close()


def our_verdict(note: bytes) -> str:
    """Our verdict on ``note``, in the Go program's words; any other exception is a bug."""
    try:
        cp = open_checkpoint(note, [SIGNER.verifier])
    except ReasoningTraceError as exc:
        return f"reject {exc}"
    return f"accept {cp.size} {base64.b64encode(cp.root).decode()}"


def same(go: str, ours: str) -> bool:
    """Both accept the same size and root, or both refuse."""
    assert not go.startswith("error"), go
    return go == ours if go.startswith("accept") else ours.startswith("reject")


def signed(body: str, *signers: Signer) -> bytes:
    """``body`` signed (by our key unless others are named), as bytes."""
    return sign_note(body, signers or (SIGNER,)).encode()


SIZES = st.one_of(
    st.integers(min_value=0, max_value=(1 << 64)).map(str),
    st.integers(min_value=(1 << 63) - 2, max_value=(1 << 63) + 1).map(str),
    st.sampled_from(["", "01", "00", "+1", "-0", "-1", " 1", "1 ", "١", "²", "１", "1_0", "0x1"]),
    st.text(alphabet=st.characters(categories=["Nd", "No"]), min_size=1, max_size=3),
    st.text(max_size=6),
)
ROOTS = st.one_of(
    st.just(ROOT),
    st.just(ROOT),
    st.binary(min_size=0, max_size=40).map(lambda b: base64.b64encode(b).decode()),
    st.sampled_from([ROOT.rstrip("="), ROOT + "=", ROOT + "==", " " + ROOT, ROOT[:-2] + "B="]),
    st.text(alphabet="ABCab+/=-_ ", max_size=48),
)
EXTENSIONS = st.lists(st.text(max_size=8).filter(lambda t: "\n" not in t), max_size=3)


@st.composite
def bodies(draw: st.DrawFn) -> str:
    """A checkpoint body: our origin, a size, a root and extension lines, some of them wrong."""
    origin = draw(st.sampled_from([ORIGIN] * 6 + ["", "other.example/key", ORIGIN + " "]))
    lines = [origin, draw(SIZES), draw(ROOTS), *draw(EXTENSIONS)]
    return "".join(f"{line}\n" for line in lines)


@st.composite
def notes(draw: st.DrawFn) -> bytes:
    """A signed note: valid, with a mutated body, or mutated after signing."""
    body = draw(bodies())
    if "\n\n" in body[:-1] or not body.strip():
        body = f"{ORIGIN}\n7\n{ROOT}\n"
    try:
        note = signed(
            body, *draw(st.sampled_from([(), (), (SIGNER, OTHER), (OTHER,), (OTHER, SIGNER)]))
        )
    except UnicodeEncodeError:
        note = signed(f"{ORIGIN}\n7\n{ROOT}\n")
    kind = draw(st.sampled_from(["as signed"] * 3 + ["bytes", "crlf", "lines", "sig line"]))
    if kind == "bytes":  # replace, insert or delete a few bytes anywhere
        data = bytearray(note)
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(data)))
            op = draw(st.sampled_from(["insert", "replace", "delete"]))
            byte = draw(st.sampled_from([0, 9, 10, 13, 32, 43, 0x7F, 0x85, 0xB2, 0xC2, 0xE2, 0xFF]))
            if op == "insert":
                data.insert(at, byte)
            elif at < len(data):
                if op == "replace":
                    data[at] = byte
                else:
                    del data[at]
        return bytes(data)
    if kind == "crlf":
        return note.replace(b"\n", b"\r\n")
    if kind == "lines":  # repeat or reorder the signature lines
        text, _, sigs = note.rpartition(b"\n\n")
        lines = sigs.splitlines(keepends=True)
        count = draw(st.sampled_from([0, 1, 2, 99, 100, 101]))
        extra = [lines[-1]] * count
        return text + b"\n\n" + b"".join(draw(st.permutations(lines + extra)))
    if kind == "sig line":  # a signature line with an odd name or encoding
        text, _, sigs = note.rpartition(b"\n\n")
        blob = base64.b64encode(b"\0\0\0\1" + bytes(64)).decode()
        name = draw(st.sampled_from(["x", "a\u00a0b", "a\u2003b", "a\u200bb", "a+b", "é", ""]))
        sep = draw(st.sampled_from([" ", "  ", "\u00a0"]))
        line = f"\u2014 {name}{sep}{blob}{draw(st.sampled_from(['', '=', ' ']))}\n".encode()
        return text + b"\n\n" + sigs + line
    return note


@needs_go
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(note=notes())
def test_same_verdict_as_go(go_verdict: GoVerdicts, note: bytes) -> None:
    """Every generated note gets the same accept/refuse verdict (and size, root) as Go's."""
    go, ours = go_verdict(note), our_verdict(note)
    event(go.split()[0])
    assert same(go, ours), (note, go, ours)


ISSUE_CASES = {
    "Arabic-Indic one": signed(f"{ORIGIN}\n\u0661\n{ROOT}\n"),
    "superscript two": signed(f"{ORIGIN}\n\u00b2\n{ROOT}\n"),
    "fullwidth one": signed(f"{ORIGIN}\n\uff11\n{ROOT}\n"),
    "size beyond int64": signed(f"{ORIGIN}\n{1 << 63}\n{ROOT}\n"),
    "invalid UTF-8": signed(f"{ORIGIN}\n1\n{ROOT}\n").replace(b"\n1\n", b"\n1\xff\n"),
    "CRLF": signed(f"{ORIGIN}\n1\n{ROOT}\n").replace(b"\n", b"\r\n"),
    "101 signatures": signed(f"{ORIGIN}\n1\n{ROOT}\n", *[SIGNER] * 101),
}


@needs_go
@pytest.mark.parametrize("case", sorted(ISSUE_CASES))
def test_known_hostile_notes_are_refused_like_go(go_verdict: GoVerdicts, case: str) -> None:
    """Non-ASCII digits, invalid UTF-8, CRLF and too many signatures: refused, as Go does."""
    note = ISSUE_CASES[case]
    assert go_verdict(note).startswith("reject")
    assert our_verdict(note).startswith("reject")


def test_refusals_are_note_errors_naming_the_problem() -> None:
    """Each hostile note raises a ``NoteError`` (never a bare ValueError) saying what is wrong."""
    from reasoning_trace.errors import NoteError

    expected = {
        "Arabic-Indic one": "not a decimal number",
        "superscript two": "not a decimal number",
        "fullwidth one": "not a decimal number",
        "size beyond int64": "not a decimal number",
        "invalid UTF-8": "not valid UTF-8",
        "CRLF": r"U\+000D",
        "101 signatures": "over the limit of 100",
    }
    for case, words in expected.items():
        with pytest.raises(NoteError, match=words):
            open_checkpoint(ISSUE_CASES[case], [SIGNER.verifier])
    assert Checkpoint.parse(f"{ORIGIN}\n1\n{ROOT}\n").size == 1
