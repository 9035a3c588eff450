"""``rtrace export`` and ``verify-bundle``: audit bundles, made where the log is and checked
offline anywhere (``bundle``).

Tests: ``tests/test_cli_integrity.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import IntegrityError
from .context import open_log
from .decisions import filter_options
from .output import emit, json_option, say, wants_json
from .render import with_progress
from .trust import read_note, trusted_option, vkeys
from .witness import policy_options, read_policy

if TYPE_CHECKING:
    from ..query import Filter

__all__ = ["register"]


def register(cli: click.Group) -> None:
    """Add the bundle commands to ``cli``."""

    @cli.command()
    @filter_options
    @click.option(
        "--bundle",
        "folder",
        required=True,
        type=click.Path(file_okay=False),
        help="Folder to write the audit bundle into.",
    )
    @json_option("What was exported as one JSON object (the default when piped).")
    @click.pass_context
    def export(
        ctx: click.Context,
        flt: Filter,
        folder: str,
        as_json: bool,
    ) -> None:
        """Write matching decisions, a checkpoint, their proofs and the vkey to a folder.

        Matching decisions no signed checkpoint covers yet cannot be proven: they are left
        out, and counted on stderr (and as "unsigned" in the JSON object).
        """
        from ..bundle import export_bundle

        if not folder.strip():
            raise click.BadParameter(
                "an empty or blank path: name the folder to write the bundle into",
                param_hint="--bundle",
            )
        with open_log(ctx) as log:
            done = with_progress(
                "proving", lambda progress: export_bundle(log, flt, folder, progress=progress)
            )
        count, cp, unsigned = done
        if unsigned:
            say(
                f"rtrace: {unsigned} matching decisions are newer than the newest checkpoint "
                f"({cp.size} records) and were left out: sign one where the log is written "
                "(`rtrace checkpoint --now`), then export again"
            )
        if wants_json(as_json):
            emit(
                {
                    "bundle": folder,
                    "decisions": count,
                    "tree_size": cp.size,
                    "origin": cp.origin,
                    "unsigned": unsigned,
                }
            )
            return
        click.echo(
            f"exported {count} decisions with proofs in the checkpoint of {cp.size} "
            f"records to {folder} (check it: rtrace verify-bundle {folder})"
        )

    @cli.command("verify-bundle")
    @click.argument("folder", type=click.Path(exists=True, file_okay=False))
    @click.option(
        "--vkey",
        help="The verifier key you trust, or a file of them (default: the bundle's vkey).",
    )
    @trusted_option("the bundle's checkpoint is older than it or forks from it")
    @policy_options("require --quorum of them to have cosigned the bundle's checkpoint")
    @json_option("The result as one JSON object (the default when piped).")
    def verify_bundle_cmd(
        folder: str,
        vkey: str | None,
        trusted_files: tuple[str, ...],
        witnesses_file: str | None,
        quorum: int | None,
        as_json: bool,
    ) -> None:
        """Check an exported bundle offline; exit 1 if any record or the bundle fails a check
        (the reason on stderr; with JSON output also as {"ok": false, "error": ...})."""
        from ..bundle import verify_bundle

        trusted = [read_note(path, lambda: _bundle_origin(folder)) for path in trusted_files]
        keys = vkeys(vkey)
        witnesses, k = read_policy(witnesses_file, quorum)
        try:
            count, cp = verify_bundle(folder, keys, trusted=trusted, witnesses=witnesses, quorum=k)
        except IntegrityError as exc:
            if wants_json(as_json):
                emit({"ok": False, "error": str(exc)})
            raise
        if wants_json(as_json):
            emit({"ok": True, "decisions": count, "tree_size": cp.size, "origin": cp.origin})
            return
        click.echo(
            f"OK: {count} decisions proven in the signed checkpoint of {cp.size} "
            f"records ({cp.origin})"
        )


def _bundle_origin(folder: str) -> str | None:
    """The origin line of a bundle's checkpoint (to find a witness's checkpoint of it)."""
    try:
        first = (Path(folder) / "checkpoint").read_text(errors="replace").split("\n", 1)[0]
    except OSError:
        return None
    return first or None
