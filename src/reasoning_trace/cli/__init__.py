"""The ``rtrace`` command line: a thin layer over ``DecisionLog`` (SPEC section 6).

Each command parses its arguments, makes one library call, renders the result, and maps
library errors to exit codes: 0 ok, 1 nothing found or a check failed, 2 bad usage or input.
Tests: ``tests/test_cli.py``, ``tests/test_cli_integrity.py``, ``tests/test_server.py``
(``serve``), ``tests/test_fleet.py`` (``--source``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

from .. import __version__
from ..errors import (
    CorruptLine,
    IntegrityError,
    LogRootMissing,
    NotFound,
    ReasoningTraceError,
    RecordError,
    SigningKeyError,
    UsageError,
)
from .context import GlobalOptionsGroup, open_log, refuse_source, require_extra
from .options import PORT, Count, proxy_addresses
from .output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, json_option, say, wants_json
from .render import print_decisions

__all__ = ["LATER", "cli", "exit_status", "main"]


@click.group(cls=GlobalOptionsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="rtrace", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """rtrace: record, watch and audit an append-only decision log.

    Global options may also follow the command name. Output: a table on a terminal; JSON
    Lines with --json or when stdout is not a terminal. Exit codes: 0 ok (also a query that
    matched nothing), 1 a check failed or the one thing asked for was not found, 2 bad usage
    or input.
    """
    obj = ctx.ensure_object(dict)
    for key, default in (("root", None), ("source", None), ("stream", "RTRACE")):
        obj.setdefault(key, default)
    if obj["source"] is not None and ctx.invoked_subcommand is not None:
        refuse_source(ctx.invoked_subcommand)


@cli.command()
@click.option(
    "-n",
    "--count",
    type=Count(0, 1_000_000),
    default=36,
    show_default=True,
    help="Decisions to record.",
)
@click.option("--seed", default=None, type=int, help="Random seed for a repeatable stream.")
@json_option("The newest ten as JSON Lines (the default when piped).")
@click.pass_context
def demo(ctx: click.Context, count: int, seed: int | None, as_json: bool) -> None:
    """Record a stream of four-voter gate decisions, then show the newest.

    Into the --dir given, else a new temporary directory (never $REASONING_TRACE_DIR's log)
    that also holds the demo log's signing key; each record's subject says "demo": true.
    """
    from ..demo import run_gate
    from .demo_log import announce, demo_area

    area = demo_area(ctx)
    if area is not None:
        announce(area)
    with open_log(ctx, create=True, **(area.options() if area else {})) as log:
        run_gate(log, count, seed=seed)
        say(f"recorded {count} decisions in {log.root} ({len(log)} in the log)")
        print_decisions(log.recent(10), as_json=wants_json(as_json))


#: The commands each module of this package defines (its ``register(cli)`` adds them): a
#: module is imported when one of its commands runs, so ``rtrace tail`` does not import the
#: others (``tests/test_startup.py`` checks that this list matches the modules).
LATER = {
    "record": "reasoning_trace.cli.record",
    "tail": "reasoning_trace.cli.decisions",
    "show": "reasoning_trace.cli.decisions",
    "query": "reasoning_trace.cli.decisions",
    "stats": "reasoning_trace.cli.decisions",
    "export": "reasoning_trace.cli.bundle",
    "verify-bundle": "reasoning_trace.cli.bundle",
    "verify": "reasoning_trace.cli.integrity",
    "checkpoint": "reasoning_trace.cli.integrity",
    "prove": "reasoning_trace.cli.integrity",
    "keys": "reasoning_trace.cli.keys",
    "replicate": "reasoning_trace.cli.fleet",
    "adopt": "reasoning_trace.cli.upgrade",
    "doctor": "reasoning_trace.cli.upgrade",
    "witness": "reasoning_trace.cli.witness",
}
for _name, _module in LATER.items():
    cli.register_later(_module, _name)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=PORT, default=8080, show_default=True, help="Port to listen on.")
@click.option(
    "--tokens",
    "token_file",
    type=click.Path(dir_okay=False, exists=True),
    help="File of role:token lines (also $REASONING_TRACE_TOKENS).",
)
@click.option(
    "--demo",
    is_flag=True,
    help="Serve a temporary log fed by a demo gate (not --dir's), removed on exit.",
)
@click.option(
    "--workers", type=Count(1, 64), default=1, show_default=True, help="Server processes (1 to 64)."
)
@click.option(
    "--streams-per-client",
    type=Count(1, 10_000),
    default=8,
    show_default=True,
    help="Event streams one client address may hold at once (per process).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Also answer requests for this host name (repeatable; '*' for any). Loopback names "
    "and the --host address are always served; other names are refused (DNS rebinding).",
)
@click.option(
    "--trust-proxy",
    "trust_proxy",
    default=None,
    metavar="IPS",
    callback=lambda ctx, param, value: proxy_addresses(value),
    help="Take the client address from X-Forwarded-For when the request comes from one of "
    "these addresses (comma-separated). Without it the header is ignored.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    token_file: str | None,
    demo: bool,
    workers: int,
    streams_per_client: int,
    allowed_hosts: tuple[str, ...],
    trust_proxy: str | None,
) -> None:
    """Serve the HTTP API and the dashboard (needs reasoning-trace[server])."""
    require_extra("the server", "server", "uvicorn", "fastapi", "prometheus_client")
    import uvicorn

    from ..server import Tokens, create_app, is_loopback
    from ..server.nodelay import NoDelayHTTPProtocol

    try:
        tokens = Tokens.from_environment(token_file)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tokens") from exc
    if not tokens and not is_loopback(host):
        raise click.UsageError(
            f"refusing to listen on {host} without tokens "
            "(give --tokens or $REASONING_TRACE_TOKENS)"
        )
    hosts = [*allowed_hosts, *([] if host in ("0.0.0.0", "::", "") else [host])]
    # uvicorn trusts X-Forwarded-For from 127.0.0.1 by default: a local page could then pose
    # as any client. It is read only from the proxies --trust-proxy names.
    options: dict[str, Any] = {
        "proxy_headers": trust_proxy is not None,
        "forwarded_allow_ips": trust_proxy,
        "http": NoDelayHTTPProtocol,  # TCP_NODELAY on every connection, in every mode
    }
    if demo and workers > 1:
        raise click.UsageError("--demo runs in one process (drop --workers)")
    if workers > 1:
        root = str(open_log(ctx, create=True).root)
        os.environ["REASONING_TRACE_DIR"] = root
        if token_file:
            os.environ["REASONING_TRACE_TOKEN_FILE"] = os.path.abspath(token_file)
        os.environ["REASONING_TRACE_STREAMS_PER_CLIENT"] = str(streams_per_client)
        os.environ["REASONING_TRACE_ALLOWED_HOSTS"] = ",".join(hosts)
        click.echo(f"serving {root} at http://{host}:{port}/ ({workers} workers)", err=True)
        uvicorn.run(
            "reasoning_trace.server:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            **options,
        )
        return
    from .demo_log import DemoGate, removed_on_exit, sigterm_unwinds

    # SIGTERM unwinds (then still ends the process): the log is closed, a demo log removed.
    with (
        sigterm_unwinds(),
        removed_on_exit(ctx, demo) as area,
        open_log(ctx, create=True, **(area.options() if area else {})) as log,
    ):
        gate = DemoGate(log).start() if demo else None
        try:
            where = " (a demo log, removed on exit)" if demo else ""
            click.echo(f"serving {log.root} at http://{host}:{port}/{where}", err=True)
            app = create_app(
                log, tokens, streams_per_client=streams_per_client, allowed_hosts=hosts
            )
            uvicorn.run(app, host=host, port=port, log_level="warning", **options)
        finally:
            if gate is not None:
                gate.stop()


def main() -> None:
    """Entry point of the ``rtrace`` console script: runs the command and maps what it raised
    to one line on stderr and the exit code of the contract (``output``): a user never sees a
    Python traceback."""
    _give_closed_streams_a_place()
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        code = 130
    except (click.exceptions.UsageError, click.exceptions.FileError) as exc:
        # a bad option or value, an unknown command, a file argument that cannot be opened
        code = _say_and_return(exc.show, EXIT_USAGE)
    except click.exceptions.ClickException as exc:
        code = _say_and_return(exc.show, exc.exit_code)
    except BrokenPipeError:
        _quiet_stdout()  # the reader went away (| head): nothing more to say, and no error
        code = EXIT_OK
    except SystemExit as exc:
        # Click turns a closed pipe (EPIPE) into exit 1 and wraps the streams to pacify them;
        # nothing else of ours raises SystemExit without standalone mode.
        if not isinstance(sys.stdout, click.utils.PacifyFlushWrapper):
            raise
        _quiet_stdout()
        code = EXIT_OK if exc.code == 1 else exc.code
    except KeyboardInterrupt:
        code = EXIT_OK
    except (ReasoningTraceError, OSError) as exc:
        line = f"rtrace: {_one_line(exc)}"
        code = _say_and_return(lambda: click.echo(line, err=True), exit_status(exc))
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # data still buffered when the reader left
        _quiet_stdout()
    except OSError:  # stdout is gone (closed, or its device failed): nothing more to do there
        _quiet_stdout()
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def _say_and_return(show: Callable[[], None], status: int) -> int:
    """Show an error on stderr, then return ``status``; a stderr that cannot be written (closed,
    a full disk) does not change the exit code."""
    try:
        show()
    except OSError:
        return status
    return status


def exit_status(exc: ReasoningTraceError | OSError) -> int:
    """The exit code of an error a command could not get past: 1 when the one thing asked for
    was not found, a check failed (a corrupt line in a day file is one the log failed), or the
    system refused (a full disk, a lost connection); 2 when the input or set-up given was wrong
    (a bad record or query, a missing log root, a signing key that cannot be read or made)."""
    if isinstance(exc, NotFound | IntegrityError | CorruptLine):
        return EXIT_FAILED
    if isinstance(exc, LogRootMissing | SigningKeyError | RecordError | UsageError):
        return EXIT_USAGE
    if isinstance(exc, OSError):  # StorageError included
        return EXIT_FAILED
    return EXIT_USAGE


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, CorruptLine):
        return f"{_place(exc)}: {exc.problem} (the log failed a check: see `rtrace verify`)"
    if isinstance(exc, OSError) and not isinstance(exc, ReasoningTraceError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc)


def _give_closed_streams_a_place() -> None:
    """Started with stdout or stderr closed (``rtrace tail >&-``), there is no stream there:
    /dev/null takes the descriptor's place, so the command still does its work and exits with
    its own code rather than failing on its first message."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
            setattr(sys, name, open(fd, "w", encoding="utf-8", closefd=False))  # noqa: SIM115


def _place(exc: CorruptLine) -> str:
    """``file:line`` of a corrupt line; the line number counted here when the reader that
    found it knew only its byte offset (reading backwards, or from the index)."""
    line = exc.line
    if line is None and os.path.isfile(exc.file):
        line = 1
        try:
            with open(exc.file, "rb") as fh:
                left = exc.offset
                while left > 0 and (block := fh.read(min(left, 1 << 20))):
                    line += block.count(b"\n")
                    left -= len(block)
        except OSError:
            line = None
    return f"{exc.file}:{line}" if line is not None else f"{exc.file} at byte {exc.offset}"


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
