"""The original module's API (SPEC section 5), as one-shot uses of ``DecisionLog``.

``record_decision`` never raises: it returns ``True`` once the decision is durable and ``False``
with a logged warning when it was refused or could not be stored (and then nothing was written).
Code that must not act on an unrecorded decision should call ``DecisionLog.record`` instead,
which raises. The functions resolve the root through ``reasoning_trace._resolve_trace_dir`` at
every call, so tests that monkeypatch it keep working. One ``DecisionLog`` per resolved root is
kept open so that concurrent callers share the group commit.

Importing this module (which ``import reasoning_trace`` does) loads none of the engine: the
log, the event bus and ``logging`` are imported at the first call, so a program that imports the
package pays for what it uses. Tests: ``tests/test_compat.py``, ``tests/test_startup.py``.
"""

from __future__ import annotations

import atexit
import errno
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from .errors import (
    ConflictError,
    CorruptLine,
    LogRootMissing,
    OriginConflict,
    RecordError,
    SigningKeyError,
    UnreconciledLog,
)

if TYPE_CHECKING:
    import logging

    from .log import DecisionLog

__all__ = ["_file_for", "_resolve_trace_dir", "read_recent", "record_decision"]

_logs: dict[str, DecisionLog] = {}
_logs_lock = threading.Lock()


def _logger() -> logging.Logger:
    """The package's logger, ``reasoning_trace`` (``logging`` is imported when first needed)."""
    import logging

    return logging.getLogger("reasoning_trace")


def _resolve_trace_dir() -> str:
    """The log root: ``$REASONING_TRACE_DIR``, else the per-user data directory."""
    from .layout import resolve_root

    return str(resolve_root(None))


_ORIGINAL = _resolve_trace_dir


def _package_resolver() -> str:
    """The root from ``reasoning_trace._resolve_trace_dir`` if that was monkeypatched, else
    from this module's (which a test may have patched instead)."""
    from .layout import resolve_root

    patched = getattr(sys.modules.get("reasoning_trace"), "_resolve_trace_dir", _ORIGINAL)
    resolver = patched if patched is not _ORIGINAL else globals()["_resolve_trace_dir"]
    return str(resolve_root(resolver()))


def _file_for(day: str | None = None) -> str:
    """The day file for ``day`` (``YYYY-MM-DD``, default today in UTC)."""
    from pathlib import Path

    from .layout import Layout

    if day is None:
        day = time.strftime("%Y-%m-%d", time.gmtime())
    return Layout(Path(_package_resolver())).day_file_s(day)


def _log_for(root: str) -> DecisionLog:
    from .events import bus
    from .log import DecisionLog

    with _logs_lock:
        log = _logs.get(root)
        if log is None:
            log = _logs[root] = DecisionLog(root)
            bus.attach(log)  # the product's subscribers receive its decisions from now on
        return log


@atexit.register
def _close_all() -> None:
    if not _logs:
        return  # nothing was opened: the engine need not be imported at exit
    from .events import bus

    with _logs_lock:
        for log in _logs.values():
            bus.detach(log)
            log.close()
        _logs.clear()


def record_decision(
    action: str,
    approved: bool,
    votes: dict[str, Any],
    subject: dict[str, Any],
    reason: str = "",
    event_bus_emit: bool = True,
) -> bool:
    """Record one consensus decision; ``True`` once durable, ``False`` if not recorded.

    With ``event_bus_emit`` the product's subscribers receive it (through the consent gate)
    from the log, after it is durable; without, it is withheld from them.
    """
    from .events import bus
    from .record import uuid7

    quiet = None
    try:
        log = _log_for(_package_resolver())
        if not event_bus_emit and bus.has_subscribers:
            quiet = uuid7()  # known before the write, so no subscriber can see it first
            bus.quiet(quiet)
        decision = log.record(action, bool(approved), votes, subject, reason, id=quiet)
    except Exception as exc:  # noqa: BLE001 -- SPEC 5: never raises; the failure is logged
        if quiet is not None:
            bus.stored(quiet, None)
        _not_recorded(exc)
        return False
    if quiet is not None:
        bus.stored(quiet, decision.seq)
    return True


def _not_recorded(exc: Exception) -> None:
    """Log and count a decision that was not recorded: a refusal of the caller's input is a
    warning; a log that cannot store is an ERROR with its cause and the fix (SPEC 5), counted
    as ``decisions_not_stored`` for ``/metrics`` and ``rtrace doctor``."""
    from .metrics import incr

    logger = _logger()
    if isinstance(exc, RecordError | ConflictError):
        incr("decisions_refused")
        logger.warning("reasoning_trace: decision not recorded (refused): %s", exc)
        return
    incr("decisions_not_stored")
    logger.error("reasoning_trace: decision NOT recorded: %s. Fix: %s", exc, fix_for(exc))


def fix_for(exc: BaseException) -> str:
    """What an operator should do about a log that cannot store (one sentence)."""
    if isinstance(exc, SigningKeyError):
        return "restore the signing key file, or run `rtrace keys rotate` to start a new key"
    if isinstance(exc, OriginConflict):
        return f"unset $REASONING_TRACE_ORIGIN or set it to the log's origin {exc.origin!r}"
    if isinstance(exc, UnreconciledLog):
        return "restore the missing records; `rtrace verify` lists them"
    if isinstance(exc, LogRootMissing):
        return "recreate the log directory (or point $REASONING_TRACE_DIR at it)"
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC:
        return "free space on the log's disk; recording resumes by itself"
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "make the log directory writable for this process's user"
    return "run `rtrace doctor` on the log directory for a diagnosis"


def read_recent(limit: int = 200) -> list[dict[str, Any]]:
    """The newest ``limit`` decisions as dicts, oldest first, across day files.

    A corrupt line is not skipped in silence: it is logged with its file and place, and the
    records around it are still returned.
    """

    def report(exc: CorruptLine) -> None:
        _logger().warning("reasoning_trace: skipped a corrupt line: %s", exc)

    log = _log_for(_package_resolver())
    return [d.to_dict() for d in log.recent(limit, on_corrupt=report)]
