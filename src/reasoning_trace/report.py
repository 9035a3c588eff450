"""What a verification found: a ``Report`` of ``Finding``s (SPEC section 4).

A finding has a kind, a message and where it was found (file, line, seq range). Its kind is
either a failure (the log is not what was signed) or a note (worth telling, not a failure);
``FAILURES`` and ``NOTES`` list them all. A ``Report`` keeps at most ``MAX_PER_KIND`` findings
of each kind and counts the rest in ``dropped``. Made by ``verify.verify`` (a local log) and
by ``verify_replica``: ``verify_node`` (a node's replica on the stream) and
``compare_with_replica`` (a local log against its replica).
Tests: ``tests/test_verify.py``, ``tests/test_fleet.py``, ``tests/test_verify_replica.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["FAILURES", "MAX_PER_KIND", "NOTES", "Finding", "Report"]

#: Finding kinds. Failures mean the log is not what was signed; notes are for the record.
FAILURES = (
    "altered",  # a record's bytes differ from what was written and signed
    "inserted",  # a line that was never written by the log, among signed records
    "deleted",  # signed records are missing (a seq gap)
    "duplicate",  # a signed record appears twice
    "reordered",  # signed records are out of seq order
    "unparseable",  # a line that is not a record
    "missing_day_file",  # a day file that held signed records is gone
    "truncated",  # the log is shorter than a signed checkpoint
    "checkpoint_mismatch",  # the records do not hash to a signed root (span located)
    "wrong_day",  # a record in the day file of another day
    "bad_signature",  # a checkpoint whose signature does not verify
    "unknown_key",  # a checkpoint signed by a key nobody published
    "bad_checkpoint",  # a malformed checkpoint entry, or one that disagrees with its note
    "fork",  # two signed checkpoints of one size with different roots
    "no_key",  # checkpoints exist but there is no verifier key to check them
    "no_checkpoint",  # a pinned verifier key and not one checkpoint it verifies (0 records too)
    "not_a_log",  # the folder holds nothing a log writes (no day file, checkpoint, key, .rtrace/)
    "acknowledged_missing",  # fewer records than the head its writers cached (.rtrace/lock)
    "unsigned_stale",  # records a running writer would have signed, that no checkpoint covers
    "rollback",  # the log is shorter than a checkpoint the auditor kept (--trusted)
    "trusted_mismatch",  # the log's tree at a kept checkpoint's size has another root
    "odd_entry",  # something named like a day or checkpoint file that is not a regular file
    "foreign_message",  # a message on a node's subject of the stream that is not its own
    "key_changed",  # the keys a node published changed, and the stream's keys were trusted
    "open_server",  # the stream's server takes no credentials: anyone can delete it
    "witness_refused",  # a witness refused a checkpoint: it cosigned a tree the log left
    "no_quorum",  # records and no checkpoint cosigned by the quorum of named witnesses
    "bad_cosignature",  # a named witness's cosignature line that does not verify
)
NOTES = (
    "unsigned",  # records after the newest checkpoint: not yet covered by a signature
    "crash_fragment",  # a torn tail cut off after a crash, kept in quarantine/
    "torn_tail",  # bytes after the last newline, not yet repaired by a writer
    "clock_backwards",  # a record's timestamp is before the previous one's
    "key_from_stream",  # a replica was checked with the key its node replicated, not yours
    "expiring_stream",  # the stream's settings would let replicated history expire
    "legacy",  # records the original module wrote, adopted into the tree as they are
    "legacy_unparseable",  # a line of the original module that is not a record (kept, a leaf)
    "foreign_line",  # the original module's line after this log's records: not in the tree
    "key_change_seen",  # the keys a node published changed (checked with the caller's keys)
    "open_server_accepted",  # the server takes no credentials, and the caller accepted that
    "unwitnessed",  # records after the newest checkpoint the quorum of witnesses cosigned
)
MAX_PER_KIND = 1000


@dataclass(frozen=True)
class Finding:
    """One thing verify found, with where: file and line, and the seq range concerned."""

    kind: str
    message: str
    file: str | None = None
    line: int | None = None
    seq_from: int | None = None
    seq_to: int | None = None

    @property
    def failure(self) -> bool:
        """Whether this finding means the log is not what was signed."""
        return self.kind in FAILURES

    def to_json(self) -> dict[str, Any]:
        """The finding as a JSON object (``failure`` included)."""
        out = {k: v for k, v in self.__dict__.items() if v is not None}
        out["failure"] = self.failure
        return out


@dataclass
class Report:
    """The result of ``verify``: what was read, what was proven, what was found."""

    root: str
    records: int = 0
    bytes: int = 0
    checkpoints: int = 0  # signed checkpoints whose root matched the records
    signed_size: int = 0  # records covered by the largest matching checkpoint
    witnessed_size: int = 0  # ... by the largest one the witness quorum cosigned (a policy)
    findings: list[Finding] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # findings over MAX_PER_KIND

    @property
    def ok(self) -> bool:
        """True when nothing was found that means the log is not what was signed."""
        return not any(f.failure for f in self.findings)

    @property
    def failures(self) -> list[Finding]:
        """The findings that are failures."""
        return [f for f in self.findings if f.failure]

    def kinds(self) -> set[str]:
        """The kinds of all findings."""
        return {f.kind for f in self.findings}

    def add(self, finding: Finding) -> None:
        """Add a finding, keeping at most ``MAX_PER_KIND`` of each kind."""
        if sum(1 for f in self.findings if f.kind == finding.kind) >= MAX_PER_KIND:
            self.dropped[finding.kind] = self.dropped.get(finding.kind, 0) + 1
            return
        self.findings.append(finding)

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON object."""
        return {
            "root": self.root,
            "ok": self.ok,
            "records": self.records,
            "bytes": self.bytes,
            "checkpoints": self.checkpoints,
            "signed_size": self.signed_size,
            "witnessed_size": self.witnessed_size,
            "findings": [f.to_json() for f in self.findings],
            "dropped": self.dropped,
        }
