"""``rtrace export`` and ``verify-bundle``: audit bundles, made where the log is and checked
offline anywhere (``bundle``).

Tests: ``tests/test_cli_integrity.py``.
"""

from __future__ import annotations

import click

from ..query import Filter
from .context import open_log
from .decisions import filter_options
from .integrity import read_note, trusted_option, vkeys
from .render import with_progress

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
    @click.pass_context
    def export(
        ctx: click.Context,
        flt: Filter,
        folder: str,
    ) -> None:
        """Write matching decisions, a checkpoint, their proofs and the vkey to a folder."""
        from ..bundle import export_bundle

        with open_log(ctx) as log:
            count, cp = with_progress(
                "proving", lambda progress: export_bundle(log, flt, folder, progress=progress)
            )
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
    def verify_bundle_cmd(folder: str, vkey: str | None, trusted_files: tuple[str, ...]) -> None:
        """Check an exported bundle offline; exit 1 if any record fails."""
        from ..bundle import verify_bundle

        trusted = [read_note(path) for path in trusted_files]
        count, cp = verify_bundle(folder, vkeys(vkey), trusted=trusted)
        click.echo(
            f"OK: {count} decisions proven in the signed checkpoint of {cp.size} "
            f"records ({cp.origin})"
        )
