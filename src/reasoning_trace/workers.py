"""Worker processes for the passes over every day file (``verify``'s hashing, the index's
first build): one home for how they start and how they end.

- Forked when this process runs one thread (safe then, and nothing is imported again: a
  spawned worker imports the caller's main module, so a script without an
  ``if __name__ == "__main__"`` guard would run again in each worker and fail).
- With other threads running (the server), forking is unsafe: spawned when the caller allows
  it (``spawn=True``), else no workers at all (``None``: the caller does the work itself).
- Every worker ends when the process that started it does, even when that one was killed with
  SIGKILL and could not tell it to (Linux ``PR_SET_PDEATHSIG``, elsewhere a watcher thread).
Tests: ``tests/test_workers.py``, ``tests/test_index_build.py``.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

__all__ = ["worker_pool"]


def worker_pool(workers: int, *, spawn: bool) -> ProcessPoolExecutor | None:
    """A pool of ``workers`` processes (``workers`` ≥ 1), or ``None`` where none can start
    safely: fewer than 1 asked for, or other threads running and ``spawn`` not allowed."""
    if workers < 1:
        return None
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        method = "fork"
    elif spawn:
        method = "spawn"
    else:
        return None
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context(method),
        initializer=_end_with_parent,
        initargs=(os.getpid(),),
    )


def _end_with_parent(parent: int) -> None:
    """A worker's start: it ends when the process that started it does (killed with SIGKILL,
    that process could not tell it to), rather than wait for work forever."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        threading.Thread(target=_watch, args=(parent,), daemon=True).start()
    if os.getppid() != parent:
        os._exit(1)  # it has ended already


def _watch(parent: int) -> None:
    """Where the parent's death sends no signal: look for it twice a second."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


_PR_SET_PDEATHSIG = 1  # <sys/prctl.h>
