"""The newest decisions of a local log, read by a process that does nothing else.

``recent_decisions(root, limit)`` answers what ``DecisionLog(root, create=False).recent(limit)``
answers for a log on disk, without opening the engine: it reads the day files from their ends
(``DayFiles.recent``: the newest day first, stopping once ``limit`` records are found), takes
no lock, writes nothing and builds no index, and it imports only the modules that read day
files. ``rtrace tail`` (without ``-f`` or filters) answers with it, so a fresh process prints
the last lines of a year-long log in the time it takes to start.
Tests: ``tests/test_startup.py``, ``tests/test_cli.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .day_files import DayFiles
from .errors import CorruptLine, LogRootMissing
from .layout import Layout, resolve_root
from .record import Decision

__all__ = ["recent_decisions"]


def recent_decisions(
    root: str | os.PathLike[str] | None,
    limit: int,
    *,
    on_corrupt: Callable[[CorruptLine], None] | None = None,
) -> list[Decision]:
    """The newest ``limit`` decisions of the log at ``root`` (resolved as ``DecisionLog``
    resolves it), oldest first.

    Raises ``LogRootMissing`` when there is no log directory there (nothing is created),
    ``QueryError`` for a ``limit`` below 0, and ``CorruptLine`` (file and byte offset) for a
    line that is not a record, unless ``on_corrupt`` is given: then it is handed the error and
    the line is skipped.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        from .query import check_limit  # its message; the query engine is not needed otherwise

        check_limit(limit)
    path = resolve_root(root)
    if not path.is_dir():
        raise LogRootMissing(f"log root {path} does not exist")
    return DayFiles(Layout(path)).recent(limit, on_corrupt)
