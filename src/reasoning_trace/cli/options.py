"""Options more than one command takes: the verdict pair ``--approved`` / ``--rejected``.

Click's boolean pair ``--approved/--rejected`` keeps whichever came last, so
``--approved --rejected`` would quietly mean "rejected". A recorded verdict or an audit filter
must not hang on argument order: the two are separate flags, read together here, and giving
both is bad usage (exit 2). ``record`` and the filters of ``query``, ``stats`` and ``export``
use them. Tests: ``tests/test_cli_record.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

__all__ = ["verdict", "verdict_flags"]


def verdict_flags(approved_help: str, rejected_help: str) -> Callable[[Any], Any]:
    """Add the two flags to a command; it receives the parameters ``approved`` and
    ``rejected`` (booleans) to hand to ``verdict``."""

    def decorate(command: Any) -> Any:
        command = click.option("--rejected", "rejected", is_flag=True, help=rejected_help)(command)
        return click.option("--approved", "approved", is_flag=True, help=approved_help)(command)

    return decorate


def verdict(approved: bool, rejected: bool) -> bool | None:
    """The verdict the flags give: ``True``, ``False``, or ``None`` when neither is given.
    Both given is refused (``click.UsageError``, exit 2)."""
    if approved and rejected:
        raise click.UsageError("give --approved or --rejected, not both")
    if approved:
        return True
    return False if rejected else None
