"""reasoning-trace: an embedded, append-only, tamper-evident decision log.

``DecisionLog`` is the engine; ``record_decision`` and ``read_recent`` are the original
module's API as one-shot uses of it. See SPEC sections 1-3 and 5.
"""

from __future__ import annotations

# The seed's private helpers stay importable by name (existing tests monkeypatch them).
from .compat import _file_for, _resolve_trace_dir, read_recent, record_decision  # noqa: F401
from .errors import (
    ConflictError,
    CorruptLine,
    ForkError,
    IntegrityError,
    LogRootMissing,
    NoteError,
    NotFound,
    ProofError,
    QueryError,
    ReasoningTraceError,
    RecordError,
    RecordTooLarge,
    RedactionError,
    SignatureError,
    StorageError,
    UnknownKey,
)
from .events import bus, decision_summary, set_consent_gate
from .files import FileStore
from .log import DecisionLog
from .query import Filter
from .record import Decision, uuid7
from .store import Store

__version__ = "0.1.0"

__all__ = [
    "ConflictError",
    "CorruptLine",
    "Decision",
    "DecisionLog",
    "FileStore",
    "Filter",
    "ForkError",
    "IntegrityError",
    "LogRootMissing",
    "NotFound",
    "NoteError",
    "ProofError",
    "QueryError",
    "ReasoningTraceError",
    "RecordError",
    "RecordTooLarge",
    "RedactionError",
    "SignatureError",
    "StorageError",
    "Store",
    "UnknownKey",
    "__version__",
    "bus",
    "decision_summary",
    "read_recent",
    "record_decision",
    "set_consent_gate",
    "uuid7",
]
