"""Stateless verification of RFC 9162 inclusion and consistency proofs: hashes in, errors out.

These functions return ``None`` or raise ``ProofError`` saying what failed; they never return
``False``. They follow RFC 9162 sections 2.1.3.2 and 2.1.4.2, with four rules the RFC leaves
implicit and the transparency-dev/merkle vectors encode (``tests/test_proof.py``):

- every hash (leaf, root, proof element) must be exactly 32 bytes;
- a consistency proof from size 0 is refused, even to size 0 (nothing to be consistent with);
- between equal sizes the proof must be empty and the two roots equal (checked before lengths);
- an inclusion proof needs ``index < size``, and a proof longer or shorter than the path fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ProofError
from .tree import HASH_SIZE, Hash, node_hash

__all__ = ["ConsistencyProof", "InclusionProof", "verify_consistency", "verify_inclusion"]


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProofError(f"{key!r} must be a non-negative integer")
    return value


def _proof_list(obj: dict[str, Any]) -> list[bytes]:
    items = obj.get("proof")
    if not isinstance(items, list):
        raise ProofError("'proof' must be a list of base64 hashes")
    return [Hash.parse(p, f"proof[{i}]", error=ProofError) for i, p in enumerate(items)]


@dataclass(frozen=True)
class InclusionProof:
    """Record ``seq`` is leaf ``seq`` of the tree of ``tree_size`` records (SPEC 4 JSON form)."""

    seq: int
    tree_size: int
    leaf_hash: bytes
    proof: list[bytes]
    checkpoint: str | None = None

    def to_json(self) -> dict[str, Any]:
        """``{"seq", "tree_size", "leaf_hash", "proof", "checkpoint"}``, hashes in base64."""
        return {
            "seq": self.seq,
            "tree_size": self.tree_size,
            "leaf_hash": str(Hash(self.leaf_hash)),
            "proof": [str(Hash(h)) for h in self.proof],
            "checkpoint": self.checkpoint,
        }

    @classmethod
    def from_json(cls, obj: Any) -> InclusionProof:
        """Parse the JSON form strictly (``ProofError`` names what is wrong)."""
        if not isinstance(obj, dict):
            raise ProofError("an inclusion proof must be a JSON object")
        note = obj.get("checkpoint")
        if note is not None and not isinstance(note, str):
            raise ProofError("'checkpoint' must be the signed note text")
        return cls(
            _int(obj, "seq"),
            _int(obj, "tree_size"),
            Hash.parse(obj.get("leaf_hash"), "leaf_hash", error=ProofError),
            _proof_list(obj),
            note,
        )


@dataclass(frozen=True)
class ConsistencyProof:
    """The tree of ``new_size`` records extends the one of ``old_size`` (SPEC 4 JSON form)."""

    old_size: int
    new_size: int
    proof: list[bytes]

    def to_json(self) -> dict[str, Any]:
        """``{"old_size", "new_size", "proof"}``, hashes in base64."""
        return {
            "old_size": self.old_size,
            "new_size": self.new_size,
            "proof": [str(Hash(h)) for h in self.proof],
        }

    @classmethod
    def from_json(cls, obj: Any) -> ConsistencyProof:
        """Parse the JSON form strictly."""
        if not isinstance(obj, dict):
            raise ProofError("a consistency proof must be a JSON object")
        return cls(_int(obj, "old_size"), _int(obj, "new_size"), _proof_list(obj))


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} is {len(value)} bytes, not {HASH_SIZE}")


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` (a leaf hash) is leaf ``index`` of the tree of ``size`` with ``root``."""
    _check_hash("leaf hash", leaf)
    _check_hash("root", root)
    for i, p in enumerate(proof):
        _check_hash(f"proof[{i}]", p)
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the path to the root")
    if r != root:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of size ``new`` with ``new_root`` extends the one of size ``old``.

    The order of the checks is the vectors': size 0 first, then equal sizes (which compare the
    roots as given), then hash lengths.
    """
    if old < 0 or new < old:
        raise ProofError(f"no consistency from size {old} to size {new}")
    if old == 0:
        raise ProofError("a consistency proof from size 0 is refused")
    if old == new:
        if proof:
            raise ProofError("a consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError("equal sizes with different roots: the trees fork")
        return
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    for i, p in enumerate(proof):
        _check_hash(f"proof[{i}]", p)
    if not proof:
        raise ProofError("empty consistency proof between different sizes")
    path = list(proof)
    if old & (old - 1) == 0:  # old is a power of two: its root is the first node
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than needed")
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root")
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root")
