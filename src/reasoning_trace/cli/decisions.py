"""``rtrace tail``, ``show``, ``query``, ``stats``: reading decisions (``record`` is in
``cli/record.py``).

Tests: ``tests/test_cli.py``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from ..errors import QueryError
from .options import COUNT, verdict, verdict_flags
from .output import EXIT_FAILED, emit, emit_lines, json_option, say, wants_json
from .render import console, print_decisions, shown, verdict_text

if TYPE_CHECKING:
    from rich.text import Text

    from ..query import Filter, Stats
    from ..record import Decision

__all__ = ["register"]


#: The filters' parameters besides ``subject`` (``query.TextCriteria``'s keys).
_CRITERIA = ("since", "until", "action", "approved", "voter", "node")


def filter_options(
    command: Callable[..., Any], *, none_when_empty: bool = False
) -> Callable[..., Any]:
    """The filters shared by tail, query, stats and export, handed to the command as ``flt``;
    with ``none_when_empty``, ``flt=None`` when no filter was given (the query engine is then
    not even imported)."""

    @functools.wraps(command)
    def with_filter(*args: Any, subject: tuple[str, ...], **kwargs: Any) -> Any:
        criteria = {name: kwargs.pop(name) for name in _CRITERIA}
        criteria["approved"] = verdict(criteria["approved"], kwargs.pop("rejected"))
        if none_when_empty and not subject and all(v is None for v in criteria.values()):
            return command(*args, flt=None, **kwargs)
        from ..query import Filter

        try:
            flt = Filter.from_text(subject=subject, **criteria)
        except QueryError as exc:  # a bad time or KEY=VALUE pair: exit 2, saying which
            raise click.BadParameter(str(exc)) from exc
        return command(*args, flt=flt, **kwargs)

    decorated: Callable[..., Any] = with_filter
    for option in reversed(
        [
            click.option(
                "--since", help="From this time: ISO 8601, Unix seconds, or 7d / 12h / 30m."
            ),
            click.option("--until", help="Before this time (same forms)."),
            click.option("--action", help="Only this action."),
            verdict_flags("Only approved decisions.", "Only rejected decisions."),
            click.option("--voter", help="Only decisions this voter voted against."),
            click.option(
                "--subject",
                "subject",
                multiple=True,
                metavar="KEY=VALUE",
                help="Only decisions whose subject has KEY=VALUE (repeatable).",
            ),
            click.option(
                "--node", help="Only decisions of this node (with --source: its subject)."
            ),
        ]
    ):
        decorated = option(decorated)
    return decorated


def _follow_line(d: Decision) -> Text:
    """One decision on one line, for ``tail -f`` on a terminal."""
    text = shown(
        f"{d.node + ' ' if d.node else ''}{d.seq:>6} {d.datetime_utc[:19].replace('T', ' ')} "
    )
    text.append_text(verdict_text(d.approved))
    text.append_text(shown(f" {d.action}"))
    against = d.against
    if against:
        text.append_text(shown(f" ✗ {', '.join(against)}", style="bold red"))
    if d.reason:
        text.append_text(shown(f" — {d.reason}"))
    return text


def register(cli: click.Group) -> None:
    """Add the decision commands to the ``rtrace`` group."""
    from .context import log_root, open_log, open_reader

    @cli.command()
    @click.option(
        "-n",
        "--lines",
        "limit",
        type=COUNT,
        default=10,
        show_default=True,
        help="How many of the newest decisions (that match the filters).",
    )
    @click.option(
        "-f",
        "--follow",
        is_flag=True,
        help="Keep printing new decisions (that match the filters), from any process, across "
        "midnight, until Ctrl-C.",
    )
    @functools.partial(filter_options, none_when_empty=True)
    @json_option()
    @click.pass_context
    def tail(
        ctx: click.Context, limit: int, follow: bool, flt: Filter | None, as_json: bool
    ) -> None:
        """Show the newest decisions, oldest first; -f follows live. The query filters apply."""
        as_json = wants_json(as_json)
        if flt is None and not follow and ctx.obj.get("source") is None:
            # The newest lines of the day files, read from their ends: a fresh process need
            # not import the engine (the writer, the index, the tree) to print them.
            from ..recent import recent_decisions

            print_decisions(recent_decisions(log_root(ctx), limit), as_json=as_json)
            return
        from ..log import DecisionLog
        from ..query import Filter

        flt = Filter() if flt is None else flt
        with open_reader(ctx) as log:
            fleet = None if isinstance(log, DecisionLog) else log
            try:
                if flt.is_empty:
                    recent = log.recent(limit)
                elif flt == Filter(node=flt.node) and fleet is not None:
                    recent = fleet.recent(limit, node=flt.node)
                else:
                    recent = log.query(flt, limit=limit, newest_first=True)[::-1]
            except ValueError as exc:  # a fleet's node name that cannot be one
                raise click.BadParameter(str(exc), param_hint="--node") from exc
            print_decisions(recent, as_json=as_json)
            if not follow:
                return
            after = recent[-1].seq if recent else len(log) - 1
            out = None if as_json else console()
            followed = (
                fleet.follow(node=flt.node) if fleet is not None else log.follow(after_seq=after)
            )
            try:
                for d in followed:
                    if not flt.matches(d):
                        continue
                    if out is None:
                        emit_lines([d.line])
                    else:
                        out.print(_follow_line(d))
            except KeyboardInterrupt:
                return  # Ctrl-C ends a follow: status 0, no traceback

    @cli.command()
    @click.argument("key", metavar="ID|SEQ")
    @json_option("The stored line (the default when stdout is not a terminal).")
    @click.pass_context
    def show(ctx: click.Context, key: str, as_json: bool) -> None:
        """Explain one decision (by id or seq): verdict, votes, subject, signature.

        Exit 1 when there is no such decision, or when its record does not match the signed
        checkpoint that covers it (also with --json, which prints the stored line).
        """
        from ..attest import attest

        with open_log(ctx) as log:
            d = log.get(key)
            signed = attest(log, d)
        failed = signed.status != "verified" and signed.checkpoint_size is not None
        if wants_json(as_json):
            emit_lines([d.line])
            if failed:
                say(f"rtrace: seq {d.seq}: {signed.status}: {signed.detail}")
                ctx.exit(EXIT_FAILED)
            return
        from rich.table import Table
        from rich.text import Text

        out = console()
        head = shown(f"#{d.seq}  {d.action}  ")
        head.append_text(verdict_text(d.approved))
        out.print(head)
        out.print(shown(f"id {d.id}"), shown(f"time {d.datetime_utc}"), sep="\n")
        if d.node:
            out.print(shown(f"node {d.node}"))
        if d.reason:
            out.print(shown(f"reason {d.reason}"))
        votes = Table(title="votes", show_edge=False)
        for column in ("voter", "vote", "reason"):
            votes.add_column(column)
        for voter, vote in d.votes.items():
            passed = vote.get("passed") if isinstance(vote, dict) else None
            mark = (
                Text("pass", style="green")
                if passed is True
                else (Text("FAIL", style="bold red") if passed is False else shown(vote))
            )
            reason = vote.get("reason", "") if isinstance(vote, dict) else ""
            votes.add_row(shown(voter), mark, shown(reason))
        out.print(votes)
        subject = Table(title="subject", show_edge=False)
        subject.add_column("key")
        subject.add_column("value")
        for k, v in d.subject.items():
            subject.add_row(shown(k), shown(v))
        out.print(subject)
        if d.redacted:
            out.print(shown(f"redacted: {', '.join(d.redacted)}"))
        words = {
            "verified": ("signed", "green"),
            "altered": ("ALTERED", "bold red"),
            "unsigned": ("not yet signed", "yellow"),
            "unverified": ("NOT VERIFIED", "bold yellow"),
        }[signed.status]
        line = Text(words[0], style=words[1])
        line.append_text(shown(f": {signed.detail}"))
        if signed.checkpoint_time:
            line.append(f", signed {signed.checkpoint_time}")
        out.print(line)
        if failed:
            ctx.exit(EXIT_FAILED)  # altered, or not proven in the checkpoint that covers it

    @cli.command()
    @filter_options
    @click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json", "csv"]),
        default=None,
        help="Output format (default: table on a terminal, else json).",
    )
    @json_option("Same as --format json: the stored lines, one a line.")
    @click.option(
        "--limit",
        type=COUNT,
        default=None,
        help="At most this many, the newest.",
    )
    @click.pass_context
    def query(
        ctx: click.Context,
        flt: Filter,
        fmt: str | None,
        as_json: bool,
        limit: int | None,
    ) -> None:
        """Decisions matching every filter, oldest first (none matching is not an error)."""
        if as_json and fmt not in (None, "json"):
            raise click.UsageError(f"--json and --format {fmt} ask for two formats: give one")
        fmt = "json" if as_json else fmt or ("table" if sys.stdout.isatty() else "json")
        with open_reader(ctx) as log:
            if fmt == "json" and limit is None and hasattr(log, "iter_lines"):
                for line in log.iter_lines(flt):  # a fleet: streamed, in flat memory
                    sys.stdout.buffer.write(line + b"\n")
                return
            if fmt == "json":  # the stored lines as they are: no parsing needed
                lines = log.query_lines(flt, limit=limit, newest_first=limit is not None)
                if limit is not None:
                    lines.reverse()
                sys.stdout.buffer.write(b"".join(line + b"\n" for line in lines))
                return
            found = log.query(flt, limit=limit, newest_first=limit is not None)
        if limit is not None:
            found.reverse()
        if fmt == "csv":
            import csv
            import json

            writer = csv.writer(sys.stdout)
            writer.writerow(
                [
                    "seq",
                    "id",
                    "datetime_utc",
                    "action",
                    "approved",
                    "vetoed_by",
                    "reason",
                    "subject",
                ]
            )
            for d in found:
                against = d.against
                writer.writerow(
                    [
                        d.seq,
                        d.id,
                        d.datetime_utc,
                        d.action,
                        d.approved,
                        ";".join(against),
                        d.reason,
                        json.dumps(d.subject),
                    ]
                )
            return
        print_decisions(found, as_json=False)

    @cli.command()
    @filter_options
    @json_option("One JSON object (the default when stdout is not a terminal).")
    @click.pass_context
    def stats(
        ctx: click.Context,
        flt: Filter,
        as_json: bool,
    ) -> None:
        """Approval rate per action, vetoes per voter, decisions per day."""
        with open_reader(ctx) as log:
            result: Stats = log.stats(flt)
        if wants_json(as_json):
            emit(result.to_json())
            return
        from rich.table import Table
        from rich.text import Text

        out = console()
        actions = Table(
            title=f"{result.total} decisions, {result.approved} approved", show_edge=False
        )
        for column in ("action", "decisions", "approved", "approval rate"):
            actions.add_column(column, justify="right" if column != "action" else "left")
        for a in result.actions:
            actions.add_row(
                shown(a.action), str(a.total), str(a.approved), f"{a.approval_rate:.1%}"
            )
        out.print(actions)
        vetoes = Table(title="vetoes by voter", show_edge=False)
        vetoes.add_column("voter")
        vetoes.add_column("voted against", justify="right")
        for voter_name, n in result.vetoes:
            vetoes.add_row(shown(voter_name), Text(str(n), style="bold red"))
        out.print(vetoes)
        days = Table(title="decisions per day", show_edge=False)
        for column in ("day", "decisions", "approved"):
            days.add_column(column, justify="right" if column != "day" else "left")
        for day, n, ok in result.days:
            days.add_row(shown(day), str(n), str(ok))
        out.print(days)
        if len(result.nodes) > 1 or ctx.obj.get("source") is not None:
            nodes = Table(title="decisions per node", show_edge=False)
            for column in ("node", "decisions", "approved"):
                nodes.add_column(column, justify="right" if column != "node" else "left")
            for name, n, ok in result.nodes:
                nodes.add_row(name or "-", str(n), str(ok))
            out.print(nodes)
