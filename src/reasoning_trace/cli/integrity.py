"""``rtrace checkpoint``, ``prove`` and ``verify``: thin layers over the integrity API.

Tests: ``tests/test_cli_integrity.py``, ``tests/test_auditor.py``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import UsageError
from .output import EXIT_FAILED, emit, json_option, say, wants_json
from .render import console as render_console
from .render import shown, with_progress
from .trust import read_note, trusted_option, vkeys
from .witness import policy_options, read_policy

if TYPE_CHECKING:
    from ..report import Report

__all__ = ["register"]

F = TypeVar("F", bound=Callable[..., Any])


def _print_report(report: Report, as_json: bool) -> None:
    """Findings then the verdict: a table and a line on a terminal; piped or with ``--json``,
    one JSON object per finding then ``{"summary": {...}}``."""
    if as_json:
        for finding in report.findings:
            emit(finding.to_json())
        emit({"summary": {k: v for k, v in report.to_json().items() if k != "findings"}})
        return
    console = render_console()
    if report.findings:
        from rich.table import Table

        table = Table(show_edge=False)
        for column in ("kind", "where", "seq", "what"):
            table.add_column(column, overflow="fold")
        for f in report.findings:
            where = f"{f.file}:{f.line}" if f.file and f.line else (f.file or "")
            seqs = (
                ""
                if f.seq_from is None
                else (str(f.seq_from) if f.seq_from == f.seq_to else f"{f.seq_from}..{f.seq_to}")
            )
            style = "bold red" if f.failure else "yellow"
            table.add_row(shown(f.kind, style=style), shown(where), seqs, shown(f.message))
        console.print(table)
    verdict = "[green]OK[/]" if report.ok else "[bold red]FAILED[/]"
    console.print(
        f"{verdict}: {report.records} records ({report.bytes:,} bytes); "
        f"{report.checkpoints} signed checkpoints match; signed through seq "
        f"{report.signed_size - 1 if report.signed_size else '-'}"
        + (f"; witnessed through seq {report.witnessed_size - 1}" if report.witnessed_size else ""),
        soft_wrap=True,
        highlight=False,
    )


def _origin(root: str | None) -> str | None:
    """The origin the log at ``root`` signs as, from its own files (nothing written)."""
    from ..checkpoint import Checkpoints
    from ..layout import resolve_root

    return Checkpoints(resolve_root(root)).origin()


def _fleet_nodes(ctx: click.Context) -> list[str]:
    """The nodes that replicated to the stream ``--source`` names."""
    from .context import open_fleet

    with open_fleet(ctx.obj["source"], ctx.obj["stream"], index=False) as fleet:
        return fleet.nodes()


def register(cli: click.Group) -> None:
    """Add the integrity commands to the ``rtrace`` group."""
    from .context import open_log

    @cli.command("verify")
    @click.option(
        "--vkey",
        help="The auditor's verifier key, or a file of them (default: the keys the log published).",
    )
    @click.option(
        "--node",
        help="With --source: the node whose replicated log to verify, from the stream alone "
        "(default: every node). "
        "With --replica: the node name this log replicates as (default: this host's name).",
    )
    @click.option(
        "--replica",
        metavar="nats://HOST:PORT",
        help="Compare this local log with its replica there: the records and checkpoints it "
        "replicated.",
    )
    @click.option(
        "--witness",
        metavar="nats://HOST:PORT",
        hidden=True,
        help="The old name of --replica (deprecated; refused unless a nats:// URL).",
    )
    @trusted_option(
        "the log is shorter than it or not consistent with it (a rollback or a rewrite)"
    )
    @policy_options(
        "require --quorum of them to have cosigned a checkpoint that matches the records"
    )
    @click.option(
        "--trust-stream-keys",
        is_flag=True,
        help="With --source or --replica and no --vkey: check with the keys the node "
        "published in the stream (anyone who could publish there could have replaced them).",
    )
    @click.option(
        "--allow-open-server",
        is_flag=True,
        help="With --source or --replica: a server that takes no credentials is a note, "
        "not a failure.",
    )
    @json_option("Findings then a summary as JSON Lines (the default when piped).")
    @click.pass_context
    def verify_cmd(
        ctx: click.Context,
        vkey: str | None,
        node: str | None,
        replica: str | None,
        witness: str | None,
        trusted_files: tuple[str, ...],
        witnesses_file: str | None,
        quorum: int | None,
        trust_stream_keys: bool,
        allow_open_server: bool,
        as_json: bool,
    ) -> None:
        """Check every record against the signed checkpoints; exit 1 on any failure.

        With --source and --node, a node's replicated log is checked from the stream alone;
        with --replica, the local log is compared with its replica. Both need the
        node's verifier key (--vkey) or --trust-stream-keys, and fail on a server that takes
        no credentials unless --allow-open-server.
        """
        from ..verify import verify

        as_json = wants_json(as_json)
        root = ctx.obj["root"]
        keys = vkeys(vkey)
        witnesses, k = read_policy(witnesses_file, quorum)
        source, stream = ctx.obj.get("source"), ctx.obj["stream"]
        if witness is not None and not witness.startswith("nats://"):
            raise click.UsageError(
                "--witness is the old name of --replica (a nats:// URL: compare this log with "
                "its replica); a witness is now a cosigner: give --witnesses FILE --quorum K, "
                "and --trusted URL for the newest checkpoint a witness cosigned"
            )
        if witnesses is not None and (source is not None or replica or witness):
            raise click.UsageError("--witnesses checks a local log; not with --source or --replica")
        trusted = [read_note(path, lambda: _origin(root)) for path in trusted_files]
        if witness is not None:
            click.echo(
                "rtrace: --witness is deprecated; say --replica (it compares this log with its "
                "replica)",
                err=True,
            )
            if replica is not None:
                raise click.UsageError("--witness is the old name of --replica: give one")
            replica = witness
        if source is not None or replica is not None:
            if source is not None and replica is not None:
                raise click.UsageError(
                    "give --source (a replica alone) or --replica (this log against its "
                    "replica), not both"
                )
            if trusted:
                raise click.UsageError(
                    "--trusted checks a local log against checkpoints you kept; it does not "
                    "apply to --source or --replica"
                )
            from .context import require_extra

            require_extra("fleet mode", "nats", "nats")
            if keys is None and not trust_stream_keys:
                raise click.UsageError(
                    "verify --source and --replica need the node's verifier key you hold "
                    "(--vkey KEY|FILE): keys read from the stream are whatever was published "
                    "there; say --trust-stream-keys to use them anyway"
                )

            from ..jetstream import check_node, default_node
            from ..verify_replica import compare_with_replica, verify_node

            try:
                if source is not None:
                    nodes = [check_node(node)] if node is not None else _fleet_nodes(ctx)
                    if not nodes:
                        raise click.ClickException(f"no node has replicated to {stream!r}")
                    ok = True
                    for name in nodes:  # without --node: every node, each on its own
                        report = verify_node(
                            source,
                            name,
                            keys,
                            stream=stream,
                            trust_stream_keys=trust_stream_keys,
                            allow_open_server=allow_open_server,
                        )
                        if len(nodes) > 1 and not as_json:
                            click.echo(f"node {name}:")  # each summary names its root too
                        _print_report(report, as_json)
                        ok = ok and report.ok
                    ctx.exit(0 if ok else 1)
                else:
                    assert replica is not None
                    name = check_node(node or default_node())
                    report = compare_with_replica(
                        root,
                        replica,
                        name,
                        keys,
                        stream=stream,
                        trust_stream_keys=trust_stream_keys,
                        allow_open_server=allow_open_server,
                    )
            except ValueError as exc:
                raise click.BadParameter(str(exc)) from exc
            _print_report(report, as_json)
            ctx.exit(0 if report.ok else 1)
        report = with_progress(
            "verifying",
            lambda progress: verify(
                root,
                keys,
                progress=progress,
                trusted=trusted,
                witnesses=witnesses,
                quorum=k,
            ),
            in_bytes=True,
            show=not as_json,
        )
        _print_report(report, as_json)
        ctx.exit(0 if report.ok else 1)

    @cli.command()
    @click.option("--now", is_flag=True, help="Sign a checkpoint of the whole log first.")
    @json_option(
        "One JSON object: origin, tree_size, root_hash (base64) and the note. Without it the "
        "note text is printed, terminal or not, ready to keep."
    )
    @click.pass_context
    def checkpoint(ctx: click.Context, now: bool, as_json: bool) -> None:
        """Print the newest signed checkpoint (a C2SP signed note), once checked: its
        signature with the keys the log published, its body, and <root>/checkpoint against
        checkpoints/. Exit 1, printing nothing, if there is none or it does not check out."""
        with open_log(ctx) as log:
            if now:
                log.checkpoint()
            files = log.checkpoints
            found = files.newest_checked(files.verifiers())
        if found is None:
            say("rtrace: no checkpoint yet (use --now to sign one)")
            ctx.exit(EXIT_FAILED)
        note, body = found
        if as_json:
            emit(
                {
                    "origin": body.origin,
                    "tree_size": body.size,
                    "root_hash": base64.b64encode(body.root).decode(),
                    "note": note,
                }
            )
            return
        click.echo(note, nl=False)

    @cli.command()
    @click.argument("key", required=False)
    @click.option("--size", type=int, help="Tree size to prove in (default: newest checkpoint).")
    @click.option(
        "--consistency",
        nargs=2,
        type=int,
        metavar="OLD NEW",
        help="A consistency proof between two tree sizes instead.",
    )
    @json_option("One JSON object on one line (the default when stdout is not a terminal).")
    @click.pass_context
    def prove(
        ctx: click.Context,
        key: str | None,
        size: int | None,
        consistency: tuple[int, int] | None,
        as_json: bool,
    ) -> None:
        """Print an inclusion proof of decision ID|SEQ (or a consistency proof) as JSON
        (RFC 9162 section 2.1.3-2.1.4), checked first against the signed checkpoint it is for.

        Exit 1, printing nothing, when the decision is not found, no signed checkpoint covers
        it (or none was signed at --size), or its bytes do not hash into the signed root;
        exit 2 for sizes no proof can exist between, or a decision given with --consistency.
        """
        from ..attest import checked_proof

        if consistency and (key is not None or size is not None):
            raise click.UsageError(
                "--consistency OLD NEW proves two tree sizes consistent: give it without a "
                "decision id or seq and without --size"
            )
        with open_log(ctx) as log:
            if consistency:
                proof = log.consistency(*consistency).to_json()
            elif key is None:
                raise click.UsageError("give a decision id or seq, or --consistency OLD NEW")
            else:
                try:
                    proof = checked_proof(log, log.get(key), size).to_json()
                except UsageError as exc:
                    raise click.BadParameter(str(exc), param_hint="--size") from exc
        if wants_json(as_json):
            emit(proof)
        else:
            click.echo(json.dumps(proof, indent=2))
