"""What every ``rtrace`` command opens: the local log the global options name, the fleet
of ``--source``, and the optional extras a command needs.

Tests: ``tests/test_cli.py``, ``tests/test_fleet.py`` (``--source``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..layout import resolve_root

if TYPE_CHECKING:
    from ..fleet import Fleet
    from ..log import DecisionLog

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
    """The global options as parameters, for the group and for each of its commands: the same
    three objects for all of them, made once (they hold no state of a run; made again for each
    command they cost every fresh ``rtrace`` process a few milliseconds)."""
    return list(_shared_global_options())


@functools.cache
def _shared_global_options() -> tuple[click.Option, ...]:
    return tuple(
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
    )


class GlobalOptionsGroup(click.Group):
    """A group whose commands (and their sub-commands) also take the global options.

    Commands may be registered later (``register_later``): the module that defines them is
    imported when one of them is asked for (``get_command``) or when every command is
    (``commands``, ``--help``), so a fresh ``rtrace tail`` does not import the modules of the
    other commands.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._later: dict[str, str] = {}  # command name -> the module whose register() adds it
        super().__init__(*args, **kwargs)
        if not any(p.name == "root" for p in self.params):
            self.params[:0] = global_options()

    @property
    def commands(self) -> dict[str, click.Command]:
        """Every command by name (those registered later are imported first)."""
        for module in sorted(set(self._later.values())):
            self._load(module)
        return self._known

    @commands.setter
    def commands(self, value: Mapping[str, click.Command]) -> None:
        self._known = dict(value)

    def register_later(self, module: str, *names: str) -> None:
        """Name the commands that ``module``'s ``register(group)`` adds, without importing it."""
        for name in names:
            self._later[name] = module

    def _load(self, module: str) -> None:
        import importlib

        for name in [n for n, m in self._later.items() if m == module]:
            del self._later[name]
        importlib.import_module(module).register(self)

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        """Register ``cmd`` with the global options appended to its own."""
        _add_globals(cmd)
        name = name or cmd.name
        if name is None:
            raise TypeError("Command has no name.")
        self._known[name] = cmd

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The names of every command, sorted (none is imported for this)."""
        return sorted({*self._known, *self._later})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command (its module imported if it was registered later), its sub-commands
        given the global options too (a sub-group's commands may be registered after the
        sub-group itself was added)."""
        module = self._later.get(cmd_name)
        if module is not None:
            self._load(module)
        cmd = self._known.get(cmd_name)
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
    from ..log import DecisionLog  # the engine, imported by the commands that open it

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
