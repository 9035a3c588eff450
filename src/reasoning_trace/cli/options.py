"""Options more than one command takes: the verdict pair ``--approved`` / ``--rejected``, and
the value types every command checks its input with (``COUNT``, ``PORT``, ``NON_EMPTY``).

Click's boolean pair ``--approved/--rejected`` keeps whichever came last, so
``--approved --rejected`` would quietly mean "rejected". A recorded verdict or an audit filter
must not hang on argument order: the two are separate flags, read together here, and giving
both is bad usage (exit 2). ``record`` and the filters of ``query``, ``stats`` and ``export``
use them. Tests: ``tests/test_cli_record.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import click

__all__ = [
    "COUNT",
    "NON_EMPTY",
    "PORT",
    "Count",
    "NonEmpty",
    "proxy_addresses",
    "verdict",
    "verdict_flags",
]

_ASCII_DIGITS = re.compile(r"[0-9]{1,19}\Z", re.ASCII)
MAX_COUNT = 2**63 - 1


class Count(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.4 on
    """A whole number written in ASCII digits between ``low`` and ``high``: ``-3``, ``1e3``,
    fullwidth digits or a number beyond 2**63-1 are bad input (exit 2), as the API says."""

    name = "integer"

    def __init__(self, low: int = 0, high: int = MAX_COUNT) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        """The number, or a usage error naming the option and the allowed range."""
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip()
            if not _ASCII_DIGITS.match(text):
                self.fail(
                    f"{str(value)[:40]!r} is not a whole number of {self._range()}", param, ctx
                )
            number = int(text)
        if not self.low <= number <= self.high:
            self.fail(f"{number} is not in {self._range()}", param, ctx)
        return number

    def _range(self) -> str:
        if self.high == MAX_COUNT:
            return f"{self.low} or more (at most 2**63-1)"
        return f"{self.low} to {self.high}"


class NonEmpty(click.ParamType):  # type: ignore[type-arg]
    """Text that is not empty or blank: ``--dir ''`` must not quietly mean the default."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """The text, or a usage error when it is empty or blank."""
        text = str(value)
        if not text.strip():
            self.fail("must not be empty", param, ctx)
        return text


def proxy_addresses(value: str | None) -> str | None:
    """``--trust-proxy``: comma-separated IP addresses or networks (``10.0.0.0/8``), or
    ``*``; anything else is bad input (exit 2) rather than a proxy never trusted."""
    if value is None:
        return None
    import ipaddress  # only when --trust-proxy is given

    for item in value.split(","):
        item = item.strip()
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise click.BadParameter(
                f"{item[:60]!r} is not an IP address or network", param_hint="--trust-proxy"
            ) from None
    return value


COUNT = Count()
PORT = Count(0, 65535)
NON_EMPTY = NonEmpty()


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
