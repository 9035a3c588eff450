"""What an auditor hands ``rtrace`` to trust: verifier keys (``--vkey``) and checkpoints kept
from before (``--trusted``: a note file, or a witness's URL). Each is checked for form here,
so a mistyped key or a file that is no note is bad input (exit 2), not a failed check.

Used by ``verify`` (``cli/integrity.py``) and ``verify-bundle`` (``cli/bundle.py``).
Tests: ``tests/test_cli_filters.py``, ``tests/test_cli_integrity.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..errors import NoteError
from .witness import fetch_trusted

__all__ = ["read_note", "trusted_option", "vkeys"]

F = TypeVar("F", bound=Callable[..., Any])


def vkeys(value: str | None) -> list[str] | None:
    """``--vkey``: a verifier key, or a file holding one a line (as ``checkpoints/vkey`` and
    ``rtrace keys show``, text or JSON, give them; blank lines and ``#`` comments skipped).
    Each key is checked here, so a mistyped key is bad input (exit 2), not a failed
    verification."""
    if value is None:
        return None
    from ..note import Verifier

    path = Path(value)
    if "+" not in value or path.exists():
        try:
            text = path.read_bytes().decode()
        except OSError as exc:
            raise click.BadParameter(f"{value}: {exc.strerror}", param_hint="--vkey") from exc
        except UnicodeDecodeError:
            raise click.BadParameter(f"{value}: not UTF-8 text", param_hint="--vkey") from None
        found = [
            (n, _key_of_line(line))
            for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
        if not found:
            raise click.BadParameter(f"{value}: no verifier key in the file", param_hint="--vkey")
    else:
        found = [(0, value.strip())]
    for n, key in found:
        try:
            Verifier.parse(key)
        except (NoteError, ValueError) as exc:
            where = f"{value} line {n}: " if n else ""
            raise click.BadParameter(
                f"{where}not a verifier key ({exc}); expected NAME+HEXID+BASE64",
                param_hint="--vkey",
            ) from exc
    return [key for _, key in found]


def _key_of_line(line: str) -> str:
    """A verifier key from a line of a key file: the key itself, or a JSON object with a
    ``verifier_key`` (what ``rtrace keys show`` prints when piped: ``keys show > FILE``
    makes a key file either way)."""
    line = line.strip()
    if line.startswith("{"):
        import json

        try:
            obj = json.loads(line)
        except ValueError:
            return line
        if isinstance(obj, dict) and isinstance(obj.get("verifier_key"), str):
            return str(obj["verifier_key"])
    return line


def trusted_option(fails_when: str) -> Callable[[F], F]:
    """``--trusted NOTE|URL`` (repeatable): checkpoints the auditor kept from before, or the
    monitoring URL of a witness (its newest cosigned checkpoint of the log)."""
    return click.option(
        "--trusted",
        "trusted_files",
        multiple=True,
        type=click.Path(dir_okay=False),
        metavar="NOTE|URL",
        help="A checkpoint note you kept from before, or a witness's URL (the newest "
        f"checkpoint it cosigned of this log) (repeatable): fail if {fails_when}.",
    )


def read_note(path: str, origin: Callable[[], str | None] | None = None) -> str:
    """A kept checkpoint note from a file (as ``rtrace checkpoint`` prints it), checked for
    form here: a file that is no checkpoint note (``checkpoint --json`` output, a truncated
    note, an empty file) is bad input (exit 2) with the reason. Its signature is checked by
    the command: one that does not verify is a failed check (exit 1). For an ``http(s)://``
    URL: the newest checkpoint the witness there cosigned of the log whose origin ``origin()``
    gives (``witness_policy.fetch_cosigned``)."""
    if path.startswith(("http://", "https://")):
        return fetch_trusted(path, origin)
    try:
        text = Path(path).read_bytes().decode()
    except OSError as exc:
        raise click.BadParameter(f"{path}: {exc.strerror}", param_hint="--trusted") from exc
    except UnicodeDecodeError as exc:
        raise click.BadParameter(f"{path}: not UTF-8 text", param_hint="--trusted") from exc
    if not text.strip():
        raise click.BadParameter(
            f"{path}: empty: not a signed checkpoint note", param_hint="--trusted"
        )
    from ..checkpoint import Checkpoint
    from ..note import split_note

    try:
        body, _signatures = split_note(text)
        Checkpoint.parse(body)
    except NoteError as exc:
        hint = (
            " (it looks like `rtrace checkpoint --json` output: keep what `rtrace checkpoint` "
            'prints, or the JSON object\'s "note")'
            if text.lstrip().startswith("{")
            else ""
        )
        raise click.BadParameter(
            f"{path}: not a signed checkpoint note ({exc}){hint}", param_hint="--trusted"
        ) from exc
    return text
