"""Audit bundles: matching records with everything needed to check them offline.

A bundle is a folder::

    records.jsonl    the records' lines, exactly as stored
    proofs.jsonl     one inclusion proof per record, same order (SPEC 4 JSON form)
    checkpoint       the signed checkpoint every proof is for, with the witness cosignatures
                     the log received for it (C2SP tlog-cosignature)
    vkey             the verifier keys the log published

``verify_bundle`` checks it with nothing but those files (and, better, the auditor's own copy
of the verifier key); so can any RFC 9162 / signed-note tool.
Tests: ``tests/test_cli.py`` (``rtrace export --bundle`` then ``rtrace verify-bundle``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from .checkpoint import Checkpoint, open_checkpoint
from .cosignature import CosignerKey
from .cosigned import Cosigned
from .errors import BundleError, NoteError, NotFound, ProofError
from .log import DecisionLog
from .note import Verifier
from .proof import InclusionProof, verify_inclusion
from .proof_check import verify_inclusion_proof
from .query import Filter
from .signed_tree import SignedTree
from .tree import leaf_hash
from .witness_policy import WitnessConfig, check_quorum

__all__ = ["Exported", "export_bundle", "verify_bundle"]


class Exported(NamedTuple):
    """What ``export_bundle`` wrote: how many decisions, the checkpoint their proofs are in,
    and how many more matched but no checkpoint covers yet (left out)."""

    decisions: int
    checkpoint: Checkpoint
    unsigned: int


def export_bundle(
    log: DecisionLog,
    flt: Filter,
    folder: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Exported:
    """Write the records ``flt`` matches, with their proofs in the newest signed checkpoint,
    into ``folder``; return what was written (``Exported``).

    Reading only: nothing is signed. Records no checkpoint covers yet are left out and
    counted (``Exported.unsigned``; the error says how many when none is covered). Every
    proof is checked before anything is written: a record altered on disk fails the export
    (``ProofError``), so no bundle that would not verify is ever made.
    """
    records = log.query(flt)
    if not records:
        raise NotFound("no decision matches; nothing to export")
    files = log.checkpoints
    latest = files.latest()
    if latest is None:
        raise NotFound("no signed checkpoint yet; nothing can be proven (sign one first)")
    keys = files.verifiers()
    checkpoint = open_checkpoint(latest.note, keys)
    signed = [d for d in records if d.seq < checkpoint.size]
    if not signed:
        raise NotFound(
            f"the {len(records)} matching decisions are newer than the newest checkpoint "
            f"({checkpoint.size} records): sign one first (`rtrace checkpoint --now`)"
        )

    def prove_all(tree: SignedTree) -> list[InclusionProof]:
        proofs = []
        for n, d in enumerate(signed, start=1):
            path = tree.inclusion_path(d.seq, checkpoint.size)
            leaf = leaf_hash(d.line)
            try:
                verify_inclusion(d.seq, checkpoint.size, leaf, path, checkpoint.root)
            except ProofError as exc:
                raise ProofError(
                    f"seq {d.seq} does not verify against the checkpoint of {checkpoint.size} "
                    f"records ({exc}): the log was altered; nothing exported (run `rtrace verify`)"
                ) from exc
            proofs.append(InclusionProof(d.seq, checkpoint.size, leaf, path))
            if progress:
                progress(n, len(signed))
        return proofs

    proofs = log.prove_with(prove_all)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / "records.jsonl").write_bytes(b"".join(d.line + b"\n" for d in signed))
    bodies = []
    for proof in proofs:
        body = proof.to_json()
        body.pop("checkpoint")  # the one checkpoint is in its own file
        bodies.append(json.dumps(body, sort_keys=True) + "\n")
    (out / "proofs.jsonl").write_text("".join(bodies))
    note = Cosigned(log.root).cosigned_note(latest.note, latest.size, latest.root)
    (out / "checkpoint").write_text(note)
    (out / "vkey").write_text("".join(f"{k}\n" for k in keys))
    return Exported(len(signed), checkpoint, len(records) - len(signed))


def _lines(data: bytes) -> list[bytes]:
    """A bundle file's lines: exactly the bytes between newlines, as a day file's (a CR, VT,
    FS or U+2028 is part of its line, where ``bytes.splitlines`` would split: the leaf is the
    line's bytes); the final newline ends the last line."""
    parts = data.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    return parts


def _read(base: Path, name: str) -> bytes:
    """A bundle file's bytes; a missing or unreadable one is a ``BundleError`` naming it."""
    try:
        return (base / name).read_bytes()
    except FileNotFoundError:
        raise BundleError(f"the bundle has no {name}") from None
    except OSError as exc:
        raise BundleError(f"the bundle's {name} cannot be read: {exc.strerror}") from exc


def verify_bundle(
    folder: str | os.PathLike[str],
    vkey: Iterable[str | Verifier] | None = None,
    *,
    trusted: Iterable[str] = (),
    witnesses: Iterable[CosignerKey | WitnessConfig] | None = None,
    quorum: int = 0,
) -> tuple[int, Checkpoint]:
    """Check every record of a bundle against its checkpoint; return (count, checkpoint).

    ``vkey`` defaults to the bundle's own ``vkey`` file; an auditor should pass the key they
    trust. ``trusted``: checkpoint notes the auditor kept; the bundle's checkpoint must not be
    smaller than one of them, nor have another root at its size (a proof of consistency is not
    in the bundle, so a kept checkpoint of another size is only compared by size).
    ``witnesses`` and ``quorum``: a witness policy; the checkpoint must carry ``quorum``
    valid cosignatures by them (``witness_policy.check_quorum``: ``QuorumError``).
    Each line of ``records.jsonl`` is the record's bytes exactly (split at ``\\n`` only), and
    each record is listed once. Raises ``BundleError`` for a bundle that is empty or malformed
    or repeats a seq (naming the file and line), ``ProofError`` naming the record that fails
    (``altered`` when its bytes are not the proven leaf), or a signature error.
    """
    base = Path(folder)
    if vkey is None:
        try:
            keys_text = _read(base, "vkey").decode()
        except UnicodeDecodeError:
            raise BundleError("the bundle's vkey is not UTF-8 text") from None
        keys: list[Verifier] = []
        for n, text in enumerate(keys_text.splitlines(), 1):
            if text.strip():
                try:
                    keys.append(Verifier.parse(text))
                except NoteError as exc:
                    raise BundleError(f"vkey line {n}: {exc}") from exc
    else:
        keys = [k if isinstance(k, Verifier) else Verifier.parse(k) for k in vkey if str(k).strip()]
    note = _read(base, "checkpoint")  # open_checkpoint decodes it strictly
    lines = _lines(_read(base, "records.jsonl"))
    proofs = _lines(_read(base, "proofs.jsonl"))
    if not lines:
        raise BundleError("the bundle holds no record: nothing is proven")
    if len(lines) != len(proofs):
        raise BundleError(f"records.jsonl has {len(lines)} lines but proofs.jsonl {len(proofs)}")
    checkpoint = open_checkpoint(note, keys)
    if witnesses is not None:
        check_quorum(note.decode(), keys, witnesses, quorum)
    for n, kept in enumerate(trusted, 1):
        old = open_checkpoint(kept, keys)
        if old.size > checkpoint.size:
            raise ProofError(
                f"the bundle's checkpoint has {checkpoint.size} records, fewer than the "
                f"{old.size} of the checkpoint you kept (#{n}): a rollback"
            )
        if old.size == checkpoint.size and old.root != checkpoint.root:
            raise ProofError(
                f"the bundle's checkpoint of {old.size} records has another root than the one "
                f"you kept (#{n}): a fork"
            )
    seen: dict[int, int] = {}  # seq -> its line
    for n, (line, raw) in enumerate(zip(lines, proofs, strict=True), start=1):
        try:
            proof = InclusionProof.from_json(json.loads(raw))
        except ValueError as exc:
            raise BundleError(f"proofs.jsonl line {n}: not JSON ({exc})") from exc
        except ProofError as exc:
            raise BundleError(f"proofs.jsonl line {n}: not a proof object ({exc})") from exc
        if proof.seq in seen:
            raise BundleError(
                f"records.jsonl line {n} repeats seq {proof.seq} of line {seen[proof.seq]}: a "
                "bundle lists each record once (a repeated record proves nothing more)"
            )
        seen[proof.seq] = n
        where = f"records.jsonl line {n} (seq {proof.seq}, proofs.jsonl line {n})"
        if leaf_hash(line) != proof.leaf_hash:
            raise ProofError(
                f"{where}: altered: its bytes do not hash to the leaf its proof is for (every "
                "byte between two newlines is part of the record, a trailing \\r too)"
            )
        try:
            verify_inclusion_proof(proof, line, checkpoint=checkpoint)
        except (ProofError, ValueError) as exc:
            raise ProofError(
                f"{where} does not verify against the signed checkpoint: {exc}"
            ) from exc
    return len(lines), checkpoint
