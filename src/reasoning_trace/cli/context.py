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
    "GlobalOptionsGroup",
    "MissingExtra",
    "log_root",
    "open_fleet",
    "open_log",
    "open_reader",
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
    ("stream", "--stream", "The JetStream stream of --source, replicate and verify --replica."),
)


def _set_global(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """A global option given after the command name: stored where the group keeps it; the
    same option given twice with different values is refused, not "last wins"."""
    if value is None:
        return
    obj = ctx.find_root().obj
    key = str(param.name)
    given = obj.setdefault("given", {})
    if key in given and given[key] != value:
        raise click.UsageError(f"{param.opts[0]} given twice ({given[key]!r} and {value!r})")
    given[key] = value
    obj[key] = value


class GlobalOptionsGroup(click.Group):
    """A group whose commands (and their sub-commands) also take the global options."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        """Register ``cmd`` with the global options appended to its own."""
        if isinstance(cmd, click.Group) and not isinstance(cmd, GlobalOptionsGroup):
            for sub in cmd.commands.values():
                _add_globals(sub)
        _add_globals(cmd)
        super().add_command(cmd, name)

    def group(self, *args: Any, **kwargs: Any) -> Any:
        """A sub-group whose commands take the global options too."""
        kwargs.setdefault("cls", GlobalOptionsGroup)
        return super().group(*args, **kwargs)


def _add_globals(cmd: click.Command) -> None:
    names = {name for p in cmd.params for name in p.opts}
    for key, option, help_text in GLOBAL_OPTIONS:
        if option not in names:
            cmd.params.append(
                click.Option(
                    [option, key],
                    default=None,
                    expose_value=False,
                    callback=_set_global,
                    help=f"{help_text} (a global option, also accepted here)",
                    metavar={"root": "PATH", "source": "nats://HOST:PORT"}.get(key, "NAME"),
                )
            )


def log_root(ctx: click.Context) -> Path:
    """The root of the local log the global options name (not opened, not created)."""
    if ctx.obj.get("source") is not None:
        raise click.UsageError(
            f"{ctx.info_name} works on a local log; --source serves tail, query, stats and verify"
        )
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
        raise click.BadParameter(str(exc), param_hint="--source") from exc
