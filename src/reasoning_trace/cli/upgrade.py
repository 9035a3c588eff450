"""``rtrace adopt`` and ``rtrace doctor``: upgrading in place from the original module, and a
check of a log's set-up. Thin layers over ``legacy`` and ``doctor``.
Tests: ``tests/test_legacy.py`` (``adopt``), ``tests/test_auditor.py`` (``doctor`` as a reader).
"""

from __future__ import annotations

import click

from ..layout import Layout, day_file_name, resolve_root
from .output import emit, json_option, wants_json

__all__ = ["register"]


def register(cli: click.Group) -> None:
    """Add ``adopt`` and ``doctor`` to the command group."""

    @cli.command()
    @click.option("--yes", is_flag=True, help="Adopt now (sign a checkpoint of the records).")
    @json_option("The plan as one JSON object (the default when piped).")
    @click.pass_context
    def adopt(ctx: click.Context, yes: bool, as_json: bool) -> None:
        """Show (dry run) or do (--yes) the adoption of the original module's records."""
        from ..checkpoint import Checkpoints
        from ..legacy import find_prefix
        from .context import open_log

        as_json = wants_json(as_json)
        root = resolve_root(ctx.obj["root"])
        if not root.is_dir():
            raise click.UsageError(f"no log at {root}")
        days = Layout(root).days()
        prefix = find_prefix(str(root), days)
        latest = Checkpoints(root).latest()
        adopted = prefix.leaves > 0 and latest is not None and latest.size >= prefix.leaves
        counts = prefix.counts()
        unparseable = [f"{day_file_name(d)}:{n}" for d, n in prefix.unparseable]
        off_day = [f"{day_file_name(d)}:{n}" for d, n in prefix.off_day]
        plan = {
            "root": str(root),
            "records": prefix.parsed,
            "lines": prefix.leaves,
            "files": counts,
            "unparseable": unparseable,
            "off_day": off_day,
            "adopted": adopted,
        }
        if not as_json and not prefix.leaves:
            click.echo(f"{root}: no records of the original module to adopt")
        elif not as_json:  # the JSON plan is printed below, once --yes has done its part
            state = "already adopted" if adopted else "to adopt"
            click.echo(
                f"{root}: {prefix.parsed} records of the original module in {len(counts)} "
                f"day files ({state}); they become seq 0..{prefix.leaves - 1}, bytes unchanged"
            )
            for day, count in counts.items():
                click.echo(f"  {day_file_name(day)}  {count} lines")
            for place in unparseable:
                click.echo(f"  {place}: not a record (torn or interleaved); kept, noted by verify")
            if off_day:
                click.echo(
                    f"  {len(off_day)} records carry a time a moment off their file's "
                    "day (the original read its clock twice): expected, not a problem"
                )
        if yes and prefix.leaves and not adopted:
            with open_log(ctx) as log:
                note = log.checkpoint()
            size = note.split("\n")[1]
            plan["adopted"] = True
            click.echo(f"adopted: checkpoint of {size} records signed", err=as_json)
        if as_json:
            emit(plan)
        elif not yes and prefix.leaves and not adopted and not as_json:
            click.echo("dry run: run `rtrace adopt --yes` to sign them into the log's tree")

    @cli.command()
    @json_option("JSON Lines, one check per line (the default when piped).")
    @click.pass_context
    def doctor(ctx: click.Context, as_json: bool) -> None:
        """Check a log and its set-up end to end and say what to do (exit 1 on a failure)."""
        from ..doctor import diagnose

        checks = diagnose(ctx.obj["root"])
        for check in checks:
            if wants_json(as_json):
                emit(check.to_json())
            else:
                mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}[check.status]
                line = f"{mark}  {check.name}: {check.detail}"
                click.echo(line + (f"\n      fix: {check.fix}" if check.fix else ""))
        if any(c.status == "fail" for c in checks):
            ctx.exit(1)
