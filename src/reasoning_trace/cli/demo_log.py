"""Where demo records go, and how ``serve --demo`` cleans up after itself.

Demo records never land in a real log. ``rtrace demo`` writes to the directory the user named
with ``--dir``, and otherwise to a fresh temporary directory, whatever ``$REASONING_TRACE_DIR``
says: that variable may point at the production log. ``rtrace serve --demo`` always serves a
fresh temporary directory. Every demo record says so in its subject (``"demo": true``, from
``demo.gate_decision``).

``serve --demo`` removes its temporary log when it stops: on return, on Ctrl-C (SIGINT), and on
SIGTERM, which is turned into an exception so that ``finally`` blocks run, and then delivered
again so that the process still ends "killed by SIGTERM", as supervisors expect of a clean
stop. (SIGKILL leaves the directory behind: nothing can run then.)

Tests: ``tests/test_cli_record.py``.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import click

from ..errors import StorageError
from ..log import DecisionLog

__all__ = [
    "DemoGate",
    "Terminated",
    "announce",
    "demo_root",
    "removed_on_exit",
    "sigterm_unwinds",
]


def demo_root(ctx: click.Context, *, always: bool = False) -> str | None:
    """Point the command's log at a new temporary directory unless ``--dir`` named one (or
    ``always``: whatever it named); return the temporary directory (``None``: the user's own
    ``--dir``)."""
    if ctx.obj.get("root") is not None and not always:
        return None
    root = tempfile.mkdtemp(prefix="rtrace-demo-")
    ctx.obj["root"] = root
    return root


def announce(root: str) -> None:
    """Say on stderr where the demo log is and how to look at it."""
    click.echo(
        f"rtrace: demo log in {root} (look at it: rtrace --dir {shlex.quote(root)} tail)",
        err=True,
    )


class Terminated(BaseException):
    """SIGTERM arrived: unwinding to clean up (a ``BaseException``, as ``KeyboardInterrupt``,
    so that no ``except Exception`` on the way swallows it)."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within: SIGTERM raises ``Terminated`` in the main thread, so ``finally`` blocks run.
    Afterwards the signal is delivered again with its default action: the process ends as
    killed by SIGTERM, once everything inside has been cleaned up."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    except Terminated:
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
        raise  # only if SIGTERM is blocked: still unwinding
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def removed_on_exit(root: str | None) -> Iterator[None]:
    """Remove the temporary log ``root`` (if any) when the block is left, however it is."""
    try:
        yield
    finally:
        if root is not None:
            try:
                shutil.rmtree(root)
            except OSError as exc:
                click.echo(f"rtrace: could not remove the demo log {root}: {exc}", err=True)


class DemoGate:
    """Record realistic gate decisions into ``log`` in the background, a few a second, until
    ``stop`` (which waits for the decision in hand)."""

    def __init__(self, log: DecisionLog, per_second: float = 4.0) -> None:
        self.log = log
        self.per_second = per_second
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name="rtrace-demo-gate", daemon=True)

    def start(self) -> DemoGate:
        """Start recording; return self."""
        self.thread.start()
        return self

    def run(self) -> None:
        """The gate's loop (in its own thread)."""
        import random

        from ..demo import gate_decision

        rng = random.Random()
        n = 0
        while not self.stopping.is_set():
            try:
                self.log.record(**gate_decision(rng, n))  # type: ignore[arg-type]
            except StorageError as exc:  # the log closed or cannot write: the demo ends
                if not self.stopping.is_set():
                    click.echo(f"rtrace: the demo gate stopped: {exc}", err=True)
                return
            n += 1
            self.stopping.wait(rng.expovariate(self.per_second))

    def stop(self) -> None:
        """Stop recording and wait for the gate's thread to end."""
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join()
