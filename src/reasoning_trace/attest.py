"""Whether one decision is signed, checked rather than assumed (SPEC 4a).

"Signed" is said of a record only after its leaf — the SHA-256 of the bytes just read from its
day file — was proven, with an RFC 9162 inclusion proof, to be in the tree whose root a
checkpoint signs, and that checkpoint's signature verified with the log's verifier keys (or
the auditor's). Anything else is said plainly: ``altered`` (its bytes are not what was
signed), ``unsigned`` (no checkpoint covers it yet), or ``unverified`` (no key, a
checkpoint whose signature does not verify, or records under the checkpoint that no longer
hash to its root when which one changed cannot be told). Reading only: no lock, no signing.
Tests: ``tests/test_auditor.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .errors import IntegrityError, NotFound, ProofError, StorageError
from .layout import Layout
from .note import Verifier
from .proof import InclusionProof
from .tree import HashFile, inclusion_proof, leaf_hash, stored_hash_index

if TYPE_CHECKING:
    from .log import DecisionLog
    from .record import Decision

__all__ = ["Attestation", "attest"]

Status = Literal["verified", "altered", "unsigned", "unverified"]


@dataclass(frozen=True)
class Attestation:
    """What was proven about one decision: ``status``, in words ``detail``, and the
    checkpoint (size, signing time) it was checked against, if any."""

    status: Status
    detail: str
    checkpoint_size: int | None = None
    checkpoint_time: str | None = None

    def to_json(self) -> dict[str, object]:
        """The attestation as a JSON object."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _stored_leaf(root: Path, seq: int) -> bytes | None:
    """The leaf hash the writer stored when it appended ``seq`` (derived, read-only)."""
    path = Layout(root).hashes
    if not path.is_file():
        return None
    hashes = HashFile(str(path), readonly=True)
    try:
        if hashes.leaves() <= seq:
            return None
        return hashes.read_hashes([stored_hash_index(0, seq)])[0]
    except (OSError, IndexError):
        return None
    finally:
        hashes.close()


def _proves_with_stored_hashes(
    root: Path, decision: Decision, proof: InclusionProof, keys: Sequence[str | Verifier]
) -> bool:
    """Whether the writer's stored hashes give an inclusion path for the decision's current
    bytes that verifies against the signed checkpoint."""
    from .proof_check import verify_inclusion_proof

    path = Layout(root).hashes
    if not path.is_file():
        return False
    hashes = HashFile(str(path), readonly=True)
    try:
        if hashes.leaves() < proof.tree_size:
            return False
        steps = inclusion_proof(decision.seq, proof.tree_size, hashes)
        other = InclusionProof(
            decision.seq, proof.tree_size, leaf_hash(decision.line), steps, proof.checkpoint
        )
        verify_inclusion_proof(other, decision.line, vkey=keys)
        return True
    except (OSError, IndexError, IntegrityError):
        return False
    finally:
        hashes.close()


def attest(
    log: DecisionLog, decision: Decision, vkey: Iterable[str | Verifier] | None = None
) -> Attestation:
    """Check ``decision`` (as read from ``log``) against the newest signed checkpoint.

    ``vkey``: the auditor's verifier keys; default, the keys the log published.
    """
    from .proof_check import verify_inclusion_proof

    files = log.checkpoints
    keys = list(vkey) if vkey is not None else files.verifiers()
    if not keys:
        return Attestation("unverified", "no verifier key to check a signature with")
    try:
        proof = log.prove(decision.seq)
    except NotFound:
        return Attestation("unsigned", "no checkpoint covers it yet")
    except StorageError as exc:
        return Attestation("unverified", f"no proof could be made: {exc}")
    except ProofError as exc:  # the log holds fewer records than its newest checkpoint
        newest = files.latest()
        return Attestation("unverified", str(exc), newest.size if newest else None)
    latest = files.latest()
    when = latest.datetime_utc if latest is not None and latest.size == proof.tree_size else None
    try:
        verify_inclusion_proof(proof, decision.line, vkey=keys)
    except ProofError:
        # A proof from the day files as they are fails when any record under the checkpoint
        # changed. The hashes the writer stored give another path; any path that verifies
        # against the signed root proves this leaf, whatever its source.
        if _proves_with_stored_hashes(log.root, decision, proof, keys):
            return Attestation(
                "verified",
                f"its leaf is proven in the checkpoint of {proof.tree_size} records (other "
                "records under it differ from what was signed: run `rtrace verify`)",
                proof.tree_size,
                when,
            )
        stored = _stored_leaf(log.root, decision.seq)
        if stored is not None and stored == leaf_hash(decision.line):
            # The stored hashes are derived: rebuilt from day files edited since the checkpoint
            # they agree with the edits. They tell nothing about whether these bytes changed.
            return Attestation(
                "unverified",
                f"its leaf is not proven in the checkpoint of {proof.tree_size} records: the "
                "records under it no longer hash to its signed root, so this record or another "
                "one under it was changed (run `rtrace verify`)",
                proof.tree_size,
                when,
            )
        return Attestation(
            "altered",
            f"its bytes do not hash into the checkpoint of {proof.tree_size} records",
            proof.tree_size,
            when,
        )
    except IntegrityError as exc:
        return Attestation("unverified", f"the checkpoint's signature: {exc}", proof.tree_size)
    return Attestation(
        "verified",
        f"its leaf is proven in the checkpoint of {proof.tree_size} records",
        proof.tree_size,
        when,
    )
