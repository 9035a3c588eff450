"""reasoning-trace: an embedded, append-only, tamper-evident decision log.

``DecisionLog`` is the engine; ``record_decision`` and ``read_recent`` are the original
module's API as one-shot uses of it. See SPEC sections 1-3 and 5.
Tests: ``tests/test_exported_members.py``, ``tests/test_architecture.py`` (the front).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# The seed's private helpers stay importable by name (existing tests monkeypatch them).
from .compat import _file_for, _resolve_trace_dir, read_recent, record_decision  # noqa: F401
from .errors import (
    BundleError,
    ConflictError,
    CorruptLine,
    ForkError,
    IntegrityError,
    LogRootMissing,
    NoteError,
    NotFound,
    OriginConflict,
    ProofError,
    QueryError,
    QuorumError,
    ReasoningTraceError,
    RecordError,
    RecordTooLarge,
    RedactionError,
    ReplicationError,
    SharedKeyError,
    SignatureError,
    SigningKeyError,
    StorageError,
    StreamConfigError,
    StreamLost,
    UnknownKey,
    UnreconciledLog,
    UsageError,
    WitnessRefused,
    WitnessUnavailable,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .checkpoint import Checkpoint
    from .events import bus, decision_summary, set_consent_gate
    from .files import FileStore
    from .fleet import Fleet
    from .jetstream_store import JetStreamStore
    from .log import DecisionLog
    from .metrics import counters
    from .proof import ConsistencyProof, InclusionProof
    from .proof_check import verify_consistency_proof, verify_inclusion_proof
    from .query import Filter
    from .record import Decision, uuid7
    from .replicate import Replicator, replicate
    from .report import Finding, Report
    from .store import Store
    from .verify import verify
    from .verify_replica import compare_with_replica, verify_node
    from .witness import Witness
    from .witness_policy import WitnessConfig, check_quorum

# Everything but the error classes and the original module's functions is imported on first
# use (PEP 562): ``import reasoning_trace`` stays cheap for a program that only records
# decisions (the engine loads at the first ``record_decision``), and fleet mode (the ``[nats]``
# extra) and the auditor's side load only where used. Guarded by ``tests/test_startup.py``.
_LAZY = {
    "Decision": "record",
    "DecisionLog": "log",
    "FileStore": "files",
    "Filter": "query",
    "Store": "store",
    "bus": "events",
    "counters": "metrics",
    "decision_summary": "events",
    "set_consent_gate": "events",
    "uuid7": "record",
    "Checkpoint": "checkpoint",
    "ConsistencyProof": "proof",
    "Finding": "report",
    "InclusionProof": "proof",
    "Report": "report",
    "verify": "verify",
    "verify_consistency_proof": "proof_check",
    "verify_inclusion_proof": "proof_check",
    "Fleet": "fleet",
    "verify_node": "verify_replica",
    "compare_with_replica": "verify_replica",
    "JetStreamStore": "jetstream_store",
    "Replicator": "replicate",
    "replicate": "replicate",
    "Witness": "witness",
    "WitnessConfig": "witness_policy",
    "check_quorum": "witness_policy",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'reasoning_trace' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "BundleError",
    "Checkpoint",
    "ConflictError",
    "ConsistencyProof",
    "CorruptLine",
    "Decision",
    "DecisionLog",
    "FileStore",
    "Filter",
    "Finding",
    "Fleet",
    "ForkError",
    "InclusionProof",
    "IntegrityError",
    "JetStreamStore",
    "LogRootMissing",
    "NotFound",
    "NoteError",
    "OriginConflict",
    "ProofError",
    "QueryError",
    "QuorumError",
    "ReasoningTraceError",
    "RecordError",
    "RecordTooLarge",
    "RedactionError",
    "ReplicationError",
    "Replicator",
    "Report",
    "SharedKeyError",
    "SignatureError",
    "SigningKeyError",
    "StorageError",
    "Store",
    "StreamConfigError",
    "StreamLost",
    "UnknownKey",
    "UnreconciledLog",
    "UsageError",
    "Witness",
    "WitnessConfig",
    "WitnessRefused",
    "WitnessUnavailable",
    "__version__",
    "bus",
    "check_quorum",
    "compare_with_replica",
    "counters",
    "decision_summary",
    "read_recent",
    "record_decision",
    "replicate",
    "set_consent_gate",
    "uuid7",
    "verify",
    "verify_consistency_proof",
    "verify_inclusion_proof",
    "verify_node",
]
