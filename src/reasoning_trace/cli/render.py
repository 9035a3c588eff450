"""Rendering decisions: a rich table on a terminal, JSON Lines for machines.

Stored text is shown as text (SPEC 6): it only ever reaches rich inside a ``Text`` made by
``shown``, never as a markup string, so ``[red]`` or ``[/closed]`` in a reason is printed as
written; control characters (C0, DEL, C1, and the bidirectional overrides that reorder what a
terminal draws) are shown escaped, ``\x1b`` rather than an escape sequence. ``--json`` prints
the stored bytes unchanged. Tests: ``tests/test_cli.py`` (a real pty).

rich is imported only where a table, a coloured line or a progress bar is drawn: JSON Lines
to a pipe never wait for it (``tests/test_startup.py``).
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

from .output import PIPED_WIDTH, emit_lines

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from ..record import Decision

__all__ = ["console", "print_decisions", "shown", "verdict_text"]


@functools.cache
def _unsafe() -> re.Pattern[str]:
    """What ``shown`` escapes (compiled on first use: JSON output never needs it)."""
    return re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


T = TypeVar("T")
#: Reports how far a long task is: ``progress(done, total)``.
Reporter = Callable[[int, int], None]


def with_progress(
    label: str, work: Callable[[Reporter | None], T], *, in_bytes: bool = False, show: bool = True
) -> T:
    """Run ``work(progress)`` with a transient progress bar on stderr when it is a terminal
    (and ``show``); otherwise ``work(None)``. ``in_bytes``: the counts are bytes."""
    if not (show and sys.stderr.isatty()):
        return work(None)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TimeRemainingColumn,
    )

    columns = (
        (BarColumn(), DownloadColumn(), TimeRemainingColumn())
        if in_bytes
        else (BarColumn(), MofNCompleteColumn())
    )
    with Progress(label, *columns, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=None)
        return work(lambda done, total: bar.update(task, completed=done, total=total))


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(value: object, style: str = "") -> Text:
    """Stored data (a string, or any JSON value) as a rich ``Text``: never parsed as markup,
    control characters escaped."""
    import json

    from rich.text import Text

    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return Text(_unsafe().sub(_escape, text), style=style)


def console() -> Console:
    """A console for stdout: colours on a terminal (rich honours NO_COLOR); piped, so wide
    that no line is folded (``output.PIPED_WIDTH``)."""
    from rich.console import Console

    out = Console()
    return out if out.is_terminal else Console(width=PIPED_WIDTH)


def verdict_text(approved: bool) -> Text:
    """ "approved" in green, "REJECTED" in bold red."""
    from rich.text import Text

    return Text("approved", style="green") if approved else Text("REJECTED", style="bold red")


def _votes_text(decision: Decision) -> Text:
    """``4/4 pass`` in green, or the voters who voted against in red."""
    from rich.text import Text

    against = decision.against
    total = len(decision.votes)
    if not against:
        return Text(f"{total}/{total} pass", style="green")
    return shown("✗ " + ", ".join(against), style="bold red")


def print_decisions(decisions: Iterable[Decision], *, as_json: bool) -> None:
    """Print decisions as a table (terminal) or one stored line each (``--json``)."""
    if as_json:
        emit_lines(d.line for d in decisions)
        return
    from rich.table import Table

    decisions = list(decisions)
    nodes = any(d.node for d in decisions)  # a fleet's, or a log whose writers name nodes
    table = Table(show_edge=False, pad_edge=False)
    for column in ("node", "seq", "time (UTC)", "action", "verdict")[0 if nodes else 1 :]:
        table.add_column(column, no_wrap=True)
    for column in ("votes", "subject", "reason"):
        table.add_column(column, overflow="fold")
    for d in decisions:
        verdict = verdict_text(d.approved)
        subject = " ".join(
            f"{k}={v}" for k, v in d.subject.items() if k in ("agent_id", "version")
        ) or " ".join(f"{k}={v}" for k, v in list(d.subject.items())[:2])
        table.add_row(
            *((shown(d.node or ""),) if nodes else ()),
            str(d.seq),
            shown(d.datetime_utc[:19].replace("T", " ")),
            shown(d.action),
            verdict,
            _votes_text(d),
            shown(subject),
            shown(d.reason),
        )
    console().print(table)
