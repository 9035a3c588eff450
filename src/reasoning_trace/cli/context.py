"""What every ``rtrace`` command opens: the local log the global options name, the fleet
of ``--source``, and the optional extras a command needs.

Tests: ``tests/test_cli.py``, ``tests/test_fleet.py`` (``--source``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..layout import resolve_root
from ..log import DecisionLog

if TYPE_CHECKING:
    from ..fleet import Fleet

__all__ = [
    "GLOBAL_OPTIONS",
    "READS_SOURCE",
    "GlobalOptionsGroup",
    "MissingExtra",
    "log_root",
    "open_fleet",
    "open_log",
    "open_reader",
    "refuse_source",
    "require_extra",
]

#: The options of the ``rtrace`` group (``ctx.obj`` key, option name, help), accepted before
#: the command name or after it: ``rtrace --dir A tail`` is ``rtrace tail --dir A``.
GLOBAL_OPTIONS: tuple[tuple[str, str, str], ...] = (
    (
        "root",
        "--dir",
        "Log root (default: $REASONING_TRACE_DIR, else the per-user data directory).",
    ),
    (
        "source",
        "--source",
        "Read a fleet's replicated logs from this NATS server (or comma-separated cluster) "
        "instead of a local log: tail, query, stats, verify.",
    ),
    (
        "stream",
        "--stream",
        "The JetStream stream of --source, replicate and verify --replica (default: RTRACE).",
    ),
)


#: The commands that read a fleet with ``--source``; every other command works on a local log
#: and refuses it rather than silently reading (or changing) the local one instead.
READS_SOURCE = frozenset({"tail", "query", "stats", "verify"})


def refuse_source(command: str | None) -> None:
    """Refuse ``--source`` for a command that does not read a fleet (exit 2)."""
    if command not in READS_SOURCE:
        raise click.UsageError(
            f"{command} works on a local log; --source serves {', '.join(sorted(READS_SOURCE))}"
        )


def _set_global(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> None:
    """Store a global option where the commands read it (``ctx.obj`` of the root context),
    wherever it was given. Given more than once (twice before the command, or before and
    after it) with different values, it is refused rather than "last wins"; an empty value is
    refused rather than meaning the default."""
    if not values:
        return
    obj = ctx.find_root().ensure_object(dict)
    key = str(param.name)
    given = obj.setdefault("given", {})
    for value in values:
        if not value.strip():
            raise click.BadParameter("must not be empty", ctx=ctx, param=param)
        if key in given and given[key] != value:
            raise click.UsageError(f"{param.opts[0]} given twice ({given[key]!r} and {value!r})")
        given[key] = value
    obj[key] = values[-1]
    if key == "source" and ctx.parent is not None:  # after the command name: this command's
        refuse_source(ctx.info_name)


def global_options() -> list[click.Option]:
    """The global options as parameters, for the group and for each of its commands."""
    return [
        click.Option(
            [option, key],
            multiple=True,
            expose_value=False,
            callback=_set_global,
            help=help_text,
            metavar={"root": "PATH", "source": "nats://HOST:PORT"}.get(key, "NAME"),
            type=click.Path(file_okay=False) if key == "root" else None,
        )
        for key, option, help_text in GLOBAL_OPTIONS
    ]


class GlobalOptionsGroup(click.Group):
    """A group whose commands (and their sub-commands) also take the global options."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not any(p.name == "root" for p in self.params):
            self.params[:0] = global_options()

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        """Register ``cmd`` with the global options appended to its own."""
        _add_globals(cmd)
        super().add_command(cmd, name)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, its sub-commands given the global options too (a sub-group's
        commands may be registered after the sub-group itself was added)."""
        cmd = super().get_command(ctx, cmd_name)
        if isinstance(cmd, click.Group) and not isinstance(cmd, GlobalOptionsGroup):
            for sub in cmd.commands.values():
                _add_globals(sub)
        return cmd


def _add_globals(cmd: click.Command) -> None:
    names = {name for p in cmd.params for name in p.opts}
    cmd.params += [p for p in global_options() if p.opts[0] not in names]


def log_root(ctx: click.Context) -> Path:
    """The root of the local log the global options name (not opened, not created)."""
    if ctx.obj.get("source") is not None:
        refuse_source(ctx.info_name)
    return resolve_root(ctx.obj["root"])


def open_log(ctx: click.Context, *, create: bool = False, **kwargs: Any) -> DecisionLog:
    """Open the local log the global options name. Only commands that write create a missing
    root: a mistyped --dir must be an error, not an empty log that "verifies"."""
    return DecisionLog(str(log_root(ctx)), create=create, **kwargs)


def open_reader(ctx: click.Context) -> DecisionLog | Fleet:
    """What the reading commands read: the local log, or with ``--source`` the fleet."""
    source = ctx.obj.get("source")
    if source is not None:
        return open_fleet(source, ctx.obj["stream"])
    return open_log(ctx)


class MissingExtra(click.ClickException):
    """An optional extra is not installed: the command cannot run as asked (exit 2)."""

    exit_code = 2


def require_extra(what: str, extra: str, *modules: str) -> None:
    """Fail (exit 2) with the install commands when an optional extra's modules are missing:
    from the package index, and from a checkout of the source."""
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingExtra(
                f"{what} needs the [{extra}] extra ({module} is missing): "
                f"pip install 'reasoning-trace[{extra}]' "
                f"(or, in a checkout of the source: pip install '.[{extra}]')"
            ) from exc


def open_fleet(url: str, stream: str, *, index: bool = True) -> Fleet:
    """The fleet replicated to ``stream`` at ``url`` (needs the ``[nats]`` extra). Messages
    skipped because they are not records of their node are reported on stderr; ``query``
    and ``stats`` use the fleet index in the user's cache unless ``index`` is false."""
    require_extra("fleet mode", "nats", "nats")
    from ..fleet import Fleet

    def foreign(subject: str, sseq: int, why: str) -> None:
        click.echo(f"rtrace: skipped {subject} #{sseq}: not a record of its node ({why})", err=True)

    try:
        return Fleet(url, stream=stream, on_foreign=foreign, index=index)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
