"""Proofs from the product, verified by the standalone verifier that needs no log."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from reasoning_trace import DecisionLog, NotFound, ProofError, UnknownKey, UsageError
from reasoning_trace.note import Signer
from reasoning_trace.proof import ConsistencyProof, InclusionProof
from reasoning_trace.proof_check import verify_consistency_proof, verify_inclusion_proof


def test_every_seq_of_a_small_log(root: Path) -> None:
    """Each record's proof, as JSON, verifies with only the line, the note and the vkey."""
    with DecisionLog(str(root), sync="never", checkpoint_every=16) as log:
        decisions = [log.record("a", i % 2 == 0, {}, {"i": i}) for i in range(50)]
        log.checkpoint()
        vkey = (root / "checkpoints" / "vkey").read_text()
        proofs = [json.loads(json.dumps(log.prove(d.seq).to_json())) for d in decisions]
    for d, proof in zip(decisions, proofs, strict=True):
        assert proof["tree_size"] == 50 and proof["checkpoint"].startswith("reasoning-trace/")
        checkpoint = verify_inclusion_proof(proof, d.line, vkey=vkey)
        assert checkpoint.size == 50
    with pytest.raises(ProofError, match="leaf hash"):
        verify_inclusion_proof(proofs[3], decisions[4].line, vkey=vkey)


def test_random_seqs_of_a_larger_log(root: Path) -> None:
    """Random records of a 20,000-record log prove against the newest checkpoint and by id."""
    rng = random.Random(5)
    with DecisionLog(str(root), sync="never") as log:
        for i in range(20_000):
            log.record("a", True, {}, {"i": i})
        note = log.checkpoint()
        vkey = (root / "checkpoints" / "vkey").read_text()
        for seq in rng.sample(range(20_000), 60):
            d = log.get(seq)
            proof = log.prove(d.id)
            assert proof.seq == seq and proof.checkpoint == note
            verify_inclusion_proof(proof, d.line, vkey=vkey)


def test_proof_for_a_record_not_yet_checkpointed_waits_for_a_checkpoint(root: Path) -> None:
    """Proving never signs: a record newer than every checkpoint is not found until one is
    signed, and then its proof verifies."""
    with DecisionLog(str(root), sync="never", checkpoint_every=1000) as log:
        d = log.record("a", True, {}, {})
        with pytest.raises(NotFound, match="not yet covered"):
            log.prove(d.seq)
        log.checkpoint()
        proof = log.prove(d.seq)
        vkey = (root / "checkpoints" / "vkey").read_text()
    assert proof.tree_size == 1
    verify_inclusion_proof(proof, d.line, vkey=vkey)


def test_consistency_between_checkpoints(root: Path) -> None:
    """The log proves any older checkpoint consistent with a newer one."""
    with DecisionLog(str(root), sync="never", checkpoint_every=0) as log:
        for i in range(37):
            log.record("a", True, {}, {"i": i})
        old_note = log.checkpoint()
        for i in range(100):
            log.record("b", True, {}, {"i": i})
        new_note = log.checkpoint()
        proof = log.consistency(37, 137)
        vkey = (root / "checkpoints" / "vkey").read_text()
    as_json = json.loads(json.dumps(proof.to_json()))
    assert set(as_json) == {"old_size", "new_size", "proof"}
    old, new = verify_consistency_proof(as_json, old_note, new_note, vkey=vkey)
    assert (old.size, new.size) == (37, 137)
    with pytest.raises(ProofError):
        verify_consistency_proof(
            ConsistencyProof(37, 137, proof.proof[1:]), old_note, new_note, vkey=vkey
        )


def test_proof_with_a_key_not_given_is_unknown(root: Path) -> None:
    """A proof checked against some other key fails as an unknown key."""
    with DecisionLog(str(root), sync="never") as log:
        d = log.record("a", True, {}, {})
        log.checkpoint()
        proof = log.prove(0)
    stranger = Signer.generate("someone").verifier
    with pytest.raises(UnknownKey):
        verify_inclusion_proof(proof, d.line, vkey=[stranger])


def test_malformed_proof_json_names_the_field() -> None:
    """Bad proof JSON is refused with the field that is wrong."""
    with pytest.raises(ProofError, match="tree_size"):
        InclusionProof.from_json({"seq": 1, "tree_size": "x", "leaf_hash": "", "proof": []})
    with pytest.raises(ProofError, match=r"proof\[0\]"):
        ConsistencyProof.from_json({"old_size": 1, "new_size": 2, "proof": ["%%"]})


@pytest.mark.parametrize("size", [True, 4.0, 4.5, "4", -1, 0, 2**70])
def test_a_size_that_is_no_tree_size_is_a_usage_error(root: Path, size: object) -> None:
    """prove and consistency with a size that is not an int in range (a bool, a float, a
    str, negative, zero, past the log): UsageError, never a proof stating that size."""
    with DecisionLog(str(root), sync="never") as log:
        for i in range(8):
            log.record("a", True, {}, {"i": i})
        log.checkpoint()
        with pytest.raises(UsageError):
            log.prove(3, size)  # type: ignore[arg-type]
        with pytest.raises(UsageError):
            log.consistency(size, 8)  # type: ignore[arg-type]
        with pytest.raises(UsageError):
            log.consistency(1, size)  # type: ignore[arg-type]
