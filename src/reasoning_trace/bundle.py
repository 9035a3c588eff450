"""Audit bundles: matching records with everything needed to check them offline.

A bundle is a folder::

    records.jsonl    the records' lines, exactly as stored
    proofs.jsonl     one inclusion proof per record, same order (SPEC 4 JSON form)
    checkpoint       the signed checkpoint every proof is for
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

from .checkpoint import Checkpoint, Checkpoints, TreeState, open_checkpoint
from .errors import NotFound, ProofError
from .log import DecisionLog
from .note import Verifier
from .proof import InclusionProof, verify_inclusion
from .query import Filter
from .tree import inclusion_proof, leaf_hash
from .verify import verify_inclusion_proof

__all__ = ["export_bundle", "verify_bundle"]


def export_bundle(
    log: DecisionLog,
    flt: Filter,
    folder: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, Checkpoint]:
    """Write the records ``flt`` matches, with their proofs in the newest signed checkpoint,
    into ``folder``; return (records written, that checkpoint).

    Reading only: nothing is signed. Records no checkpoint covers yet are left out (the
    error says how many when none is covered). Every proof is checked before anything is
    written: a record altered on disk fails the export (``ProofError``), so no bundle that
    would not verify is ever made.
    """
    records = log.query(flt)
    if not records:
        raise NotFound("no decision matches; nothing to export")
    files = Checkpoints(log.root)
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

    def prove_all(tree: TreeState, size: int) -> list[InclusionProof]:
        proofs = []
        for n, d in enumerate(signed, start=1):
            path = inclusion_proof(d.seq, checkpoint.size, tree.hashes)
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
    (out / "checkpoint").write_text(latest.note)
    (out / "vkey").write_text("".join(f"{k}\n" for k in keys))
    return len(signed), checkpoint


def verify_bundle(
    folder: str | os.PathLike[str], vkey: Iterable[str | Verifier] | None = None
) -> tuple[int, Checkpoint]:
    """Check every record of a bundle against its checkpoint; return (count, checkpoint).

    ``vkey`` defaults to the bundle's own ``vkey`` file; an auditor should pass the key they
    trust. Raises ``ProofError`` naming the record that fails, or a signature error.
    """
    base = Path(folder)
    keys = list(vkey) if vkey is not None else (base / "vkey").read_text().splitlines()
    note = (base / "checkpoint").read_bytes()  # open_checkpoint decodes it strictly
    lines = (base / "records.jsonl").read_bytes().splitlines()
    proofs = (base / "proofs.jsonl").read_text().splitlines()
    if len(lines) != len(proofs):
        raise ProofError(f"{len(lines)} records but {len(proofs)} proofs")
    checkpoint = open_checkpoint(
        note, [k if isinstance(k, Verifier) else Verifier.parse(k) for k in keys if str(k).strip()]
    )
    for n, (line, raw) in enumerate(zip(lines, proofs, strict=True), start=1):
        try:
            verify_inclusion_proof(json.loads(raw), line, checkpoint=checkpoint)
        except (ProofError, ValueError) as exc:
            raise ProofError(f"records.jsonl line {n}: {exc}") from exc
    return len(lines), checkpoint
