"""Whether one decision is signed, checked rather than assumed (SPEC 4a).

"Signed" is said of a record only after its leaf — the SHA-256 of the bytes just read from its
day file — was proven, with an RFC 9162 inclusion proof, to be in the tree whose root a
checkpoint signs, and that checkpoint's signature verified with the log's verifier keys (or
the auditor's). Anything else is said plainly: ``altered`` (its bytes are not what was
signed), ``unsigned`` (no checkpoint covers it yet), or ``unverified`` (no key, a
checkpoint whose signature does not verify, or records under the checkpoint that no longer
hash to its root when which one changed cannot be told). Reading only: no lock, no signing.
``checked_proof`` hands out an inclusion proof only once it verified the same way.
Tests: ``tests/test_auditor.py``, ``tests/test_integrity_edges.py`` (``checked_proof``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .errors import CorruptLine, IntegrityError, NotFound, ProofError, StorageError
from .layout import Layout
from .note import Verifier
from .proof import InclusionProof
from .tree import HashFile, inclusion_proof, leaf_hash, stored_hash_index

if TYPE_CHECKING:
    from .log import DecisionLog
    from .record import Decision

__all__ = ["Attestation", "attest", "checked_proof"]

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


def _stored_hashes_proof(
    root: Path, decision: Decision, proof: InclusionProof, keys: Sequence[str | Verifier]
) -> InclusionProof | None:
    """An inclusion path for the decision's current bytes from the writer's stored hashes
    that verifies against the signed checkpoint of ``proof``, or ``None``."""
    from .proof_check import verify_inclusion_proof

    path = Layout(root).hashes
    if not path.is_file():
        return None
    hashes = HashFile(str(path), readonly=True)
    try:
        if hashes.leaves() < proof.tree_size:
            return None
        steps = inclusion_proof(decision.seq, proof.tree_size, hashes)
        other = InclusionProof(
            decision.seq, proof.tree_size, leaf_hash(decision.line), steps, proof.checkpoint
        )
        verify_inclusion_proof(other, decision.line, vkey=keys)
        return other
    except (OSError, IndexError, IntegrityError):
        return None
    finally:
        hashes.close()


def _past_a_corrupt_line(
    log: DecisionLog, decision: Decision, size: int | None, keys: Sequence[str | Verifier]
) -> InclusionProof | None:
    """A proof of ``decision`` in the signed checkpoint of ``size`` records (default: the
    newest) from the writer's stored hashes, for a log whose day files hold a corrupt line
    elsewhere (no tree can be rebuilt from them then); ``None`` when they do not prove it."""
    files = log.checkpoints
    if size is None:
        latest = files.latest()
        signed, note = (latest.size, latest.note) if latest is not None else (0, None)
    else:
        signed, note = size, next((e.note for e in files.entries() if e.size == size), None)
    if note is None or decision.seq >= signed:
        return None
    bare = InclusionProof(decision.seq, signed, leaf_hash(decision.line), [], note)
    return _stored_hashes_proof(log.root, decision, bare, keys)


def checked_proof(
    log: DecisionLog,
    decision: Decision,
    size: int | None = None,
    vkey: Iterable[str | Verifier] | None = None,
) -> InclusionProof:
    """An inclusion proof of ``decision`` (as read from ``log``) in the signed checkpoint of
    ``size`` records (default: the newest), checked before anyone is shown it: the leaf hash
    of the stored bytes goes through the path to the root of a checkpoint whose signature
    verifies with ``vkey`` (default: the keys the log published).

    Raises ``NotFound`` when no checkpoint covers the decision yet or none was signed at
    ``size``, ``UsageError`` for a size no proof can exist in, ``ProofError`` when the bytes
    do not hash into the checkpoint (the message says whether this record was altered or
    another one under the checkpoint), and ``IntegrityError`` when the checkpoint's note does
    not check out.
    """
    from .proof_check import verify_inclusion_proof

    files = log.checkpoints
    keys = list(vkey) if vkey is not None else files.verifiers()
    try:
        proof = log.prove(decision.seq, size)
    except CorruptLine:
        found = _past_a_corrupt_line(log, decision, size, keys)
        if found is None:
            raise
        return found
    if proof.checkpoint is None:
        newest = files.latest()
        also = f"; the newest covers {newest.size}" if newest is not None else ""
        raise NotFound(
            f"no signed checkpoint of size {proof.tree_size}: a proof in it could not be "
            f"checked against a signature{also}"
        )
    try:
        verify_inclusion_proof(proof, decision.line, vkey=keys)
    except ProofError:
        # The path from the day files as they are fails when any record under the checkpoint
        # changed; the writer's stored hashes may still prove this leaf (see ``attest``).
        other = _stored_hashes_proof(log.root, decision, proof, keys)
        if other is not None:
            return other
        stored = _stored_leaf(log.root, decision.seq)
        if stored is not None and stored == leaf_hash(decision.line):
            raise ProofError(
                f"record {decision.seq} is what its writer stored, but the records under the "
                f"signed checkpoint of {proof.tree_size} no longer hash to its root: another "
                "record was changed, and no proof of this one can be made (run `rtrace verify`)"
            ) from None
        what = (
            "it or another record under it was altered (no stored hashes tell which)"
            if stored is None
            else "altered (its bytes are not the leaf its writer stored)"
        )
        raise ProofError(
            f"record {decision.seq} does not match the signed checkpoint of {proof.tree_size} "
            f"records: {what}; run `rtrace verify`"
        ) from None
    except IntegrityError as exc:
        raise IntegrityError(
            f"the checkpoint of {proof.tree_size} records does not check out: {exc}"
        ) from exc
    return proof


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
    except CorruptLine as exc:  # a line elsewhere: this one may still be proven
        found = _past_a_corrupt_line(log, decision, None, keys)
        if found is None:
            return Attestation("unverified", f"no proof can be made: {exc} (run `rtrace verify`)")
        newest = files.latest()
        return Attestation(
            "verified",
            f"its leaf is proven in the checkpoint of {found.tree_size} records by the hashes "
            f"its writer stored; elsewhere, {exc} (run `rtrace verify`)",
            found.tree_size,
            newest.datetime_utc if newest is not None else None,
        )
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
        if _stored_hashes_proof(log.root, decision, proof, keys) is not None:
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
