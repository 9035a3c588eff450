"""The output contract every ``rtrace`` command keeps (SPEC section 6), in one place.

- A command that prints data prints JSON Lines (one object a line, a record as its stored
  line byte for byte) when given ``--json`` or when stdout is not a terminal, and readable
  text on a terminal. ``checkpoint`` is the one exception the SPEC names: piped, it prints its
  note text, ready to keep.
- Messages (what was done, where, how many) go to stderr, so a pipe carries only data.
- Human text piped (``query --format table | less``) is never wrapped at 80 columns.
- Exit codes: 0 ok (a query that matched nothing is ok), 1 a check failed or the one thing
  asked for was not found, 2 bad usage or input (``EXIT_OK``, ``EXIT_FAILED``, ``EXIT_USAGE``).

This module imports nothing heavy: JSON output must not wait for the table library.
Tests: ``tests/test_cli_contract.py`` walks every command piped and on a pseudo-terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click
import orjson

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PIPED_WIDTH",
    "emit",
    "emit_lines",
    "json_option",
    "say",
    "wants_json",
]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: The width human text is laid out in when stdout is not a terminal: wide enough that no
#: line a command prints is ever folded.
PIPED_WIDTH = 100_000


def wants_json(flag: bool) -> bool:
    """True when the command should print JSON Lines: ``--json`` was given or stdout is not a
    terminal."""
    return flag or not sys.stdout.isatty()


def json_option(
    help_text: str = "JSON Lines (the default when stdout is not a terminal).",
) -> Callable[[F], F]:
    """The ``--json`` flag, handed to the command as ``as_json``."""
    option: Callable[[F], F] = click.option("--json", "as_json", is_flag=True, help=help_text)
    return option


def emit(obj: Any) -> None:
    """Print one JSON object on one line of stdout (keys sorted, UTF-8)."""
    sys.stdout.buffer.write(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS) + b"\n")
    sys.stdout.buffer.flush()


def emit_lines(lines: Iterable[bytes], *, flush_each: bool = False) -> None:
    """Print stored lines as they are, one a line (``flush_each``: as each arrives, for a
    follow)."""
    out = sys.stdout.buffer
    for line in lines:
        out.write(line + b"\n")
        if flush_each:
            out.flush()
    out.flush()


def say(message: str) -> None:
    """A message for the person at the terminal, on stderr: never mixed into the data."""
    click.echo(message, err=True)
