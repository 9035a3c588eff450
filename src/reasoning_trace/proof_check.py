"""Proof checks for someone who holds no log (SPEC section 4, "Proofs"; RFC 9162 2.1.3-2.1.4).

``verify_inclusion_proof`` checks that a record (its line as stored, or its leaf hash) is in
the tree a signed checkpoint commits to; ``verify_consistency_proof`` checks that a newer signed
checkpoint extends an older one. Each needs only the proof JSON, the checkpoint note(s) and a
verifier key: a note's signature (C2SP signed note) is checked before any hash is compared.
The hashing itself is ``proof.verify_inclusion`` and ``proof.verify_consistency``.
Failures raise ``ProofError``, ``SignatureError``/``UnknownKey`` or ``NoteError``.
Tests: ``tests/test_prove.py``, ``tests/test_cli_integrity.py``, ``tests/test_server.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .checkpoint import Checkpoint, open_checkpoint
from .errors import ProofError
from .note import Verifier, as_verifiers
from .proof import ConsistencyProof, InclusionProof, verify_consistency, verify_inclusion
from .tree import leaf_hash

__all__ = ["verify_consistency_proof", "verify_inclusion_proof"]


def verify_inclusion_proof(
    proof: InclusionProof | dict[str, Any],
    record: bytes | None = None,
    *,
    leaf: bytes | None = None,
    vkey: str | Verifier | Iterable[str | Verifier] = (),
    note: str | bytes | None = None,
    checkpoint: Checkpoint | None = None,
) -> Checkpoint:
    """Check that a record (its line, or its ``leaf`` hash) is in the signed log.

    Uses the proof's own checkpoint note unless ``note`` is given, or a ``checkpoint`` the
    caller already opened with ``open_checkpoint`` (then no note is read and ``vkey`` is not
    needed: a bundle's one note is opened once, not once per record); returns the checkpoint.
    Raises ``ProofError``, ``SignatureError``/``UnknownKey`` or ``NoteError``.
    """
    p = proof if isinstance(proof, InclusionProof) else InclusionProof.from_json(proof)
    if checkpoint is None:
        text = note or p.checkpoint
        if text is None:
            raise ProofError("the proof carries no checkpoint note and none was given")
        checkpoint = open_checkpoint(text, as_verifiers(vkey) or [])
    if checkpoint.size != p.tree_size:
        raise ProofError(
            f"the proof is for a tree of {p.tree_size} records, the checkpoint "
            f"signs {checkpoint.size}"
        )
    if record is not None:
        leaf = leaf_hash(record.rstrip(b"\n"))
    if leaf is None:
        raise ProofError("give the record's line or its leaf hash")
    if leaf != p.leaf_hash:
        raise ProofError("the record's leaf hash is not the one the proof is for")
    verify_inclusion(p.seq, p.tree_size, leaf, p.proof, checkpoint.root)
    return checkpoint


def verify_consistency_proof(
    proof: ConsistencyProof | dict[str, Any],
    old_note: str,
    new_note: str,
    *,
    vkey: str | Verifier | Iterable[str | Verifier],
) -> tuple[Checkpoint, Checkpoint]:
    """Check that the newer signed checkpoint extends the older one; return both."""
    p = proof if isinstance(proof, ConsistencyProof) else ConsistencyProof.from_json(proof)
    verifiers = as_verifiers(vkey) or []
    old, new = open_checkpoint(old_note, verifiers), open_checkpoint(new_note, verifiers)
    if (old.size, new.size) != (p.old_size, p.new_size):
        raise ProofError(
            f"the proof is from {p.old_size} to {p.new_size}, the checkpoints "
            f"are of {old.size} and {new.size}"
        )
    if old.origin != new.origin:
        raise ProofError(f"checkpoints of two logs: {old.origin!r} and {new.origin!r}")
    verify_consistency(old.size, new.size, old.root, new.root, p.proof)
    return old, new
