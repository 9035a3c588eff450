"""One verifier for every process serving a log: ``Watch`` (``rtrace serve --workers N``).

Each server process starts a ``Watch`` on the log's root. Its thread tries, every ``every``
seconds, to take an exclusive ``flock`` on ``watch.lock`` in the log's ``layout.watch_dir``
(the per-user cache, never under the log root: a read-only log is watched alike). The one
process that holds it runs the ``verify_incremental.IncrementalVerifier`` (a full pass first,
then incremental checks, full passes every ``full_every`` seconds and, after a failure, at
each check, so a repair or a new edit shows at once) and writes each result, and
that it is checking, to ``watch.json`` (a temporary file renamed over it, so a reader never
sees half). Every process answers ``status()`` from that file. When the verifying process
ends, the kernel drops its lock and another process takes over at its next try (starting
with a full pass of its own). So N workers verify once, not N times; ``status()`` says which
process verifies (``verifier.pid``), how many checks it ran, which process answered
(``served_by``) and how many checks that one ran (``checks_here``), which is how
``tests/test_verify_watch.py`` proves it with a real ``rtrace serve --workers 2``.
When the cache cannot be written, each process verifies for itself, in memory.

A log its server writes to (``writing``) that holds nothing a log writes yet (its folder is
there, no record, key or ``.rtrace/`` in it: ``serve --demo`` before its first record) is
``status`` ``empty`` (0 records, ``ok`` not set), never ``not_a_log``; once this process saw
it hold a log (or read another's result on it), such a folder fails as ``verify`` says.

A check that cannot run (the log's folder is gone, a file cannot be read) is a failure
(``cannot_verify``), logged, and the watch goes on: a badge never reads "verified" for a log
that was not read.
Tests: ``tests/test_verify_watch.py``, ``tests/test_dashboard_trust.py``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from typing import Any

from .layout import Layout, resolve_root, watch_dir
from .presence import is_a_log
from .verify_incremental import IncrementalVerifier

__all__ = ["Watch"]

logger = logging.getLogger("reasoning_trace")
NOT_YET = {"status": "not yet run"}


class Watch:
    """Keeps the log at ``root`` verified from one process of many; see the module docstring.

    ``every``: seconds between checks (0: never check); ``full_every``: seconds between full
    passes; ``retry_every``: after a failure, seconds between full passes (0: every check);
    ``writing``: the server writes to this log (an empty folder is a log with no record yet).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None,
        *,
        every: float = 5.0,
        full_every: float = 600.0,
        retry_every: float = 0.0,
        writing: bool = False,
    ) -> None:
        self.root = resolve_root(root)
        self.every, self.full_every, self.retry_every = every, full_every, retry_every
        self.checks_here = 0
        self.writing, self._was_a_log = writing, not writing
        self.folder = watch_dir(self.root) if every > 0 else None
        self._fd: int | None = None
        self._verifier: IncrementalVerifier | None = None
        self._state: dict[str, Any] = dict(NOT_YET)  # what this process last wrote or read
        self._read_mark: tuple[int, int] | None = None
        self._published = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtrace-verify", daemon=True)

    def start(self) -> None:
        """Start watching, unless ``every`` is 0."""
        if self.every > 0:
            self._thread.start()

    def stop(self) -> None:
        """Stop after the check that is running, if any (then the lock is let go)."""
        self._stop.set()

    @property
    def leading(self) -> bool:
        """Whether this process is the one that verifies."""
        return self._verifier is not None

    def status(self) -> dict[str, Any]:
        """The last result of whichever process verifies, and who answered."""
        state = self._state if self.leading or self.folder is None else self._read()
        return {**state, "served_by": os.getpid(), "checks_here": self.checks_here}

    @property
    def ok(self) -> bool | None:
        """Whether the last check passed; ``None`` before the first."""
        ok = self.status().get("ok")
        return ok if isinstance(ok, bool) else None

    def _run(self) -> None:
        """Take the lead when free, check while leading; every ``every`` seconds until stopped."""
        try:
            while not self._stop.is_set():
                if self._lead():
                    self._check()
                if self._stop.wait(self.every):
                    return
        finally:
            if self._fd is not None:
                os.close(self._fd)  # lets another process take the lead
                self._fd = None

    def _lead(self) -> bool:
        """Whether this process verifies: it holds the lock, or just took it."""
        if self.leading:
            return True
        if self.folder is not None:
            try:
                flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                fd = os.open(self.folder / "watch.lock", flags, 0o600)
            except OSError as exc:  # then this process verifies for itself
                logger.warning("reasoning_trace: cannot share verification (%s)", exc)
                self.folder = None
                return self._lead()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._fd = fd
            self._was_a_log |= self._read().get("status") in ("ok", "failed")
        self._verifier = IncrementalVerifier(
            self.root, full_every=self.full_every, retry_every=self.retry_every
        )
        self._state = {**NOT_YET, "verifier": self._who()}
        return True

    def _who(self) -> dict[str, Any]:
        """The verifying process and what it did so far."""
        verifier = self._verifier
        return {
            "pid": os.getpid(),
            "checks": self.checks_here,
            "full_passes": verifier.full_passes if verifier else 0,
            "every": self.every,
            "full_every": self.full_every,
        }

    def _check(self) -> None:
        """One check (full or incremental, as the verifier decides), published before and after."""
        verifier = self._verifier
        assert verifier is not None
        started = time.time()
        if self._no_record_yet():
            self.checks_here += 1
            self._state = {"status": "empty", "ran_at": started, "records": 0, "findings": []}
            self._publish(checking=None)
            return
        last = verifier.last
        full = last is None or started - last.full_at >= self.full_every or not last.ok
        self._publish(checking={"since": started, "full": full})

        def progress(done: int, total: int) -> None:
            if time.monotonic() - self._published >= 0.5:
                self._publish(
                    checking={"since": started, "full": full, "done": done, "total": total}
                )

        try:
            result = verifier.check(progress).to_json()
        except Exception as exc:  # noqa: BLE001 -- a failure in the badge, logged; goes on
            logger.warning("reasoning_trace: could not verify %s: %s", self.root, exc)
            result = {
                "status": "failed",
                "ok": False,
                "ran_at": started,
                "seconds": round(time.time() - started, 3),
                "failures": 1,
                "findings": [
                    {
                        "kind": "cannot_verify",
                        "message": f"the log could not be read to verify it: {exc}",
                        "failure": True,
                    }
                ],
            }
        self.checks_here += 1
        self._state = result
        self._publish(checking=None)

    def _no_record_yet(self) -> bool:
        """Whether the log this server writes to is a folder holding nothing a log writes,
        and this process never saw it hold more."""
        if not self._was_a_log:
            self._was_a_log = not self.root.is_dir() or is_a_log(Layout(self.root))
        return not self._was_a_log

    def _publish(self, *, checking: dict[str, Any] | None) -> None:
        """Write the state (the last result, what is being checked, who checks) for all."""
        self._state = {**self._state, "checking": checking, "verifier": self._who()}
        self._published = time.monotonic()
        if self.folder is None:
            return
        tmp = self.folder / f".watch.{os.getpid()}.tmp"
        try:
            tmp.write_text(json.dumps(self._state))
            os.replace(tmp, self.folder / "watch.json")
        except OSError as exc:
            logger.warning("reasoning_trace: could not share the verification in %s: %s", tmp, exc)

    def _read(self) -> dict[str, Any]:
        """The state the verifying process wrote (re-read only when the file changed)."""
        assert self.folder is not None
        path = self.folder / "watch.json"
        try:
            st = path.stat()
            mark = (st.st_mtime_ns, st.st_size)
            if mark != self._read_mark:
                state = json.loads(path.read_text())
                if isinstance(state, dict):
                    self._state, self._read_mark = state, mark
        except FileNotFoundError:
            return dict(NOT_YET)
        except (OSError, ValueError) as exc:
            logger.warning("reasoning_trace: could not read the shared verification: %s", exc)
        return self._state
