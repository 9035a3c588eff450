"""Where demo records go, and how ``serve --demo`` cleans up after itself.

Demo records never land in a real log. ``rtrace demo`` writes to the directory the user named
with ``--dir``, and otherwise to a fresh temporary directory, whatever ``$REASONING_TRACE_DIR``
says: that variable may point at the production log. ``rtrace serve --demo`` always serves a
fresh temporary directory. Every demo record says so in its subject (``"demo": true``, from
``demo.gate_decision``). A temporary demo (``DemoArea``) holds the log in ``log/`` and its
signing key in ``signing.key`` beside it, whatever ``$REASONING_TRACE_KEY`` and
``$REASONING_TRACE_ORIGIN`` say: nothing of it lands in the user's config folder, and it goes
with the folder.

``serve --demo`` removes its temporary log when it stops: on return, on Ctrl-C (SIGINT), and on
SIGTERM, which is turned into an exception so that ``finally`` blocks run, and then delivered
again so that the process still ends "killed by SIGTERM", as supervisors expect of a clean
stop. (SIGKILL leaves the directory behind: nothing can run then.)

Tests: ``tests/test_cli_record.py``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import click

from ..errors import StorageError
from ..log import DecisionLog
from ..origin import root_origin

__all__ = [
    "DemoArea",
    "DemoGate",
    "Terminated",
    "announce",
    "demo_area",
    "removed_on_exit",
    "sigterm_unwinds",
]


@dataclass(frozen=True)
class DemoArea:
    """A demo's temporary folder ``dir``: the log in ``log/``, its signing key in
    ``signing.key`` beside it; removed together."""

    dir: str

    @property
    def root(self) -> str:
        """The demo log's root."""
        return os.path.join(self.dir, "log")

    @property
    def key(self) -> str:
        """The demo log's signing key file."""
        return os.path.join(self.dir, "signing.key")

    def options(self) -> dict[str, Any]:
        """``DecisionLog``'s arguments for the demo log: its own key file and origin."""
        return {"key": self.key, "origin": root_origin(Path(self.root))}


def demo_area(ctx: click.Context, *, always: bool = False) -> DemoArea | None:
    """Point the command's log at a new temporary folder unless ``--dir`` named one (or
    ``always``: whatever it named); return that folder (``None``: the user's own
    ``--dir``)."""
    if ctx.obj.get("root") is not None and not always:
        return None
    area = DemoArea(tempfile.mkdtemp(prefix="rtrace-demo-"))
    ctx.obj["root"] = area.root
    return area


def announce(area: DemoArea) -> None:
    """Say on stderr where the demo log is and how to look at it."""
    root = area.root
    click.echo(
        f"rtrace: demo log in {root} (look at it: rtrace --dir {shlex.quote(root)} tail); "
        f"its signing key is {area.key}, removed with it",
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
def removed_on_exit(ctx: click.Context, demo: bool) -> Iterator[DemoArea | None]:
    """With ``demo``: a new temporary demo folder for the command's log (``demo_area``),
    removed with its log and key when the block is left, however it is."""
    area = demo_area(ctx, always=True) if demo else None
    try:
        yield area
    finally:
        if area is not None:
            try:
                shutil.rmtree(area.dir)
            except OSError as exc:
                click.echo(f"rtrace: could not remove the demo log {area.dir}: {exc}", err=True)


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
