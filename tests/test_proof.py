"""Every transparency-dev/merkle proof vector: happy paths verify, corrupted variants fail."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from reasoning_trace import ProofError
from reasoning_trace.proof import verify_consistency, verify_inclusion

from .conftest import VECTORS

RFC6962 = VECTORS / "rfc6962"


def cases(kind: str) -> list[Path]:
    """All vector files of one kind."""
    found = sorted((RFC6962 / kind).rglob("*.json"))
    assert found, f"no {kind} vectors under {RFC6962}"
    return found


def b64(value: str | None) -> bytes:
    """Decode a base64 field (absent means empty)."""
    return base64.b64decode(value) if value else b""


@pytest.mark.parametrize("path", cases("inclusion"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_inclusion_vector(path: Path) -> None:
    """Inclusion vectors: the happy path verifies and every wantErr case raises ProofError."""
    case = json.loads(path.read_text())
    args = (
        case["leafIdx"],
        case["treeSize"],
        b64(case["leafHash"]),
        [b64(p) for p in case["proof"] or []],
        b64(case["root"]),
    )
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", cases("consistency"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_consistency_vector(path: Path) -> None:
    """Consistency vectors: the happy path verifies and every wantErr case raises ProofError."""
    case = json.loads(path.read_text())
    args = (
        case["size1"],
        case["size2"],
        b64(case["root1"]),
        b64(case["root2"]),
        [b64(p) for p in case["proof"] or []],
    )
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_implicit_rules() -> None:
    """The four rules the RFC leaves implicit, as the vectors encode them."""
    root = b"\x01" * 32
    with pytest.raises(ProofError, match="size 0"):
        verify_consistency(0, 5, root, root, [root])
    with pytest.raises(ProofError, match="size 0"):
        verify_consistency(0, 0, root, root, [])
    with pytest.raises(ProofError, match="not 32"):
        verify_consistency(1, 2, root[:31], root, [root])
    with pytest.raises(ProofError, match="must be empty"):
        verify_consistency(3, 3, root, root, [root])
    with pytest.raises(ProofError, match="fork"):
        verify_consistency(3, 3, root, b"\x02" * 32, [])
    verify_consistency(3, 3, root, root, [])
