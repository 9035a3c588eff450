"""What ``verify`` checks of a log's witnesses (C2SP tlog-witness, tlog-cosignature).

Always: a witness that refused one of the log's checkpoints (``checkpoints/witness-refusals.
jsonl``, kept by ``witness_client``) is a failure, ``witness_refused``: it had cosigned a
tree the log no longer extends (a rollback or a fork).

With a witness policy (``witnesses`` and ``quorum``): each checkpoint whose root matched the
records is looked at with the cosignatures kept for it (``cosigned``); the largest with
``quorum`` valid cosignatures by distinct named witnesses is ``Report.witnessed_size``.
Records and not one such checkpoint is a failure, ``no_quorum``; a cosignature line by a
named witness that does not verify is a failure, ``bad_cosignature``; records after the
largest witnessed checkpoint are a note, ``unwitnessed`` (cosigning lags signing by a round
trip; an auditor who must not rely on them reads ``witnessed_size``).
Tests: ``tests/test_witness.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from .checkpoint import Checkpoints, open_checkpoint
from .cosignature import CosignerKey, cosignatures, parse_signature_lines, with_cosignatures
from .cosigned import Cosigned
from .errors import NoteError, SignatureError
from .note import Verifier
from .report import Finding, Report

__all__ = ["witness_findings"]


def witness_findings(
    base: Path,
    verifiers: Sequence[Verifier],
    matched: Iterable[int],
    report: Report,
    witnesses: Sequence[CosignerKey] | None = None,
    quorum: int = 0,
) -> None:
    """Add the witness findings of the log at ``base`` to ``report`` (see the module
    docstring); ``matched``: the sizes of the checkpoints whose root matched the records."""
    cosigned = Cosigned(base)
    for refusal in cosigned.refusals():
        report.add(
            Finding(
                "witness_refused",
                f"witness {refusal.witness} refused the checkpoint of {refusal.size} records "
                f"({refusal.status}) at {refusal.datetime_utc}: {refusal.message}",
                refusal.file,
                refusal.line,
            )
        )
    if not witnesses or quorum <= 0:
        return
    sizes = set(matched)
    witnessed = 0
    for entry in Checkpoints(base).entries_and_errors():
        if isinstance(entry, NoteError) or entry.size not in sizes or entry.size <= witnessed:
            continue
        lines = []
        for line in cosigned.lines_for(entry.size, entry.root):
            try:
                parse_signature_lines(line)
            except NoteError as exc:
                report.add(
                    Finding(
                        "bad_cosignature",
                        f"a kept cosignature of the checkpoint of {entry.size} records: {exc}",
                        str(cosigned.path),
                    )
                )
                continue
            lines.append(line)
        note = with_cosignatures(entry.note, lines)
        try:
            open_checkpoint(entry.note, verifiers)
            good = cosignatures(note, witnesses)
        except SignatureError as exc:
            report.add(
                Finding(
                    "bad_cosignature",
                    f"the checkpoint of {entry.size} records at {entry.file}:{entry.line}: {exc}",
                    entry.file,
                    entry.line,
                )
            )
            continue
        except NoteError:
            continue  # already a finding of the checkpoint itself
        if len({c.key.public for c in good}) >= quorum:
            witnessed = entry.size
    report.witnessed_size = witnessed
    if report.records and not witnessed:
        report.add(
            Finding(
                "no_quorum",
                f"{report.records} records and not one checkpoint that {quorum} of the "
                f"{len(witnesses)} witnesses you named cosigned: nothing here is witnessed",
                None,
                None,
                0,
                report.records - 1,
            )
        )
    elif report.records > witnessed:
        report.add(
            Finding(
                "unwitnessed",
                f"seq {witnessed}..{report.records - 1}: not covered by a checkpoint that "
                f"{quorum} witness(es) cosigned",
                None,
                None,
                witnessed,
                report.records - 1,
            )
        )
