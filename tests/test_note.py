"""C2SP signed notes, byte for byte against Go's golang.org/x/mod/sumdb/note."""

from __future__ import annotations

import json

import pytest

from reasoning_trace import NoteError, SignatureError, UnknownKey
from reasoning_trace.note import Signer, Verifier, open_note, sign_note, split_note

from .conftest import VECTORS

V = json.loads((VECTORS / "signed-note/vectors.json").read_text())


def test_go_example_signs_byte_for_byte() -> None:
    """Signing the Go package's example text with its key gives Go's note exactly."""
    signer = Signer.parse(V["skey"])
    assert str(signer) == V["skey"]
    assert str(signer.verifier) == V["vkey"]
    assert sign_note(V["text"], [signer]) == V["signed_note"]


def test_checkpoint_vector() -> None:
    """The checkpoint body signed by the all-zero-seed key matches and opens with its vkey."""
    signer = Signer.parse(V["checkpoint_skey"])
    assert str(signer.verifier) == V["checkpoint_vkey"]
    assert sign_note(V["checkpoint_body"], [signer]) == V["checkpoint_note"]
    text, by = open_note(V["checkpoint_note"], [Verifier.parse(V["checkpoint_vkey"])])
    assert text == V["checkpoint_body"] and [str(v) for v in by] == [V["checkpoint_vkey"]]


def test_open_go_note() -> None:
    """A note signed by Go verifies with the published verifier key."""
    text, by = open_note(V["signed_note"], [Verifier.parse(V["vkey"])])
    assert text == V["text"] and by[0].name == "PeterNeumann"


def test_tampered_text_is_a_bad_signature() -> None:
    """Changing one character of the text makes the signature bad (not unknown)."""
    tampered = V["signed_note"].replace("answer", "Answer")
    with pytest.raises(SignatureError) as info:
        open_note(tampered, [Verifier.parse(V["vkey"])])
    assert not isinstance(info.value, UnknownKey)
    assert info.value.key_name == "PeterNeumann"


def test_unknown_key_is_distinct() -> None:
    """A note signed by a key nobody gave us raises UnknownKey naming the signer."""
    other = Signer.generate("PeterNeumann")
    note = sign_note(V["text"], [other])
    with pytest.raises(UnknownKey) as info:
        open_note(note, [Verifier.parse(V["vkey"])])
    assert info.value.key_id == other.verifier.id


@pytest.mark.parametrize(
    "bad",
    [
        "no blank line\n— x AAAA\n",
        "text\n\n— name not-base64!\n",
        "text\n\n- name AAAAAAAA\n",
        "text\n\n",
        "text\n\n— name AAAAAAAA",
    ],
)
def test_malformed_notes(bad: str) -> None:
    """Malformed notes raise NoteError, never a crash or a pass."""
    with pytest.raises(NoteError):
        split_note(bad)


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+AhpaaQcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a\u0663+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # Arabic 3
        "PeterNeumann+c74f_20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_malformed_verifier_keys(vkey: str) -> None:
    """A verifier key with a wrong id, algorithm, name or shape is refused."""
    with pytest.raises(NoteError):
        Verifier.parse(vkey)


def test_verifier_key_id_in_upper_case_hex() -> None:
    """An id in upper-case hex is the same key, as Go's strconv.ParseUint reads it."""
    key = Verifier.parse("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
    assert str(key) == "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
