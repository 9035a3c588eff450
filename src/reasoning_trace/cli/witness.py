"""``rtrace witness init|add-log|serve|push`` and the witness-policy options of ``verify`` and
``verify-bundle``: thin layers over ``witness``, ``witness_server``, ``witness_client`` and
``witness_policy`` (C2SP tlog-witness, tlog-cosignature).

"Witness" means a cosigner here: comparing a log with its replica is ``verify --replica``.
Tests: ``tests/test_witness.py``, ``tests/test_witness_interop.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import UsageError
from .output import EXIT_FAILED, emit, json_option, say, wants_json

__all__ = ["fetch_trusted", "policy_options", "read_policy", "register"]

F = TypeVar("F", bound=Callable[..., Any])


def policy_options(what: str) -> Callable[[F], F]:
    """``--witnesses FILE`` and ``--quorum K``: a witness policy for ``what``."""

    def decorate(command: F) -> F:
        command = click.option(
            "--quorum",
            type=int,
            default=None,
            metavar="K",
            help="With --witnesses: how many of them must have cosigned (default 1).",
        )(command)
        option: Callable[[F], F] = click.option(
            "--witnesses",
            "witnesses_file",
            type=click.Path(dir_okay=False),
            metavar="FILE",
            help=f"A file of witness cosigner keys (one a line, a URL after each optional): "
            f"{what}.",
        )
        return option(command)

    return decorate


def read_policy(witnesses_file: str | None, quorum: int | None) -> tuple[list[Any] | None, int]:
    """The witnesses and quorum the options give (``--quorum`` alone is bad usage)."""
    from ..witness_policy import check_policy, read_witnesses

    if witnesses_file is None:
        if quorum is not None:
            raise click.UsageError("--quorum needs --witnesses FILE (the witnesses to count)")
        return None, 0
    try:
        witnesses = read_witnesses(witnesses_file)
        k = 1 if quorum is None else quorum
        check_policy([w.key for w in witnesses], k)
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint="--witnesses/--quorum") from exc
    return witnesses, k


def fetch_trusted(url: str, origin: Callable[[], str | None] | None) -> str:
    """``--trusted URL``: the newest checkpoint the witness at ``url`` cosigned of the log
    whose origin ``origin()`` gives (``witness_policy.fetch_cosigned``); bad input (exit 2)
    when it cannot be read."""
    from ..witness_policy import fetch_cosigned

    name = origin() if origin is not None else None
    if name is None and not url.rstrip("/").endswith("/checkpoint"):
        raise click.BadParameter(
            f"{url}: the log's origin is unknown (no checkpoint yet); give the full "
            "monitoring URL, .../<sha256 of the origin>/checkpoint",
            param_hint="--trusted",
        )
    try:
        return fetch_cosigned(url, name or "")
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint="--trusted") from exc


def register(cli: click.Group) -> None:
    """Add the ``witness`` group to ``rtrace``."""

    @cli.group()
    def witness() -> None:
        """Run a witness (a C2SP tlog-witness cosigner) or send a log's checkpoints to its
        witnesses. A log's witnesses are listed in <dir>/witnesses."""

    state_option = click.option(
        "--state",
        required=True,
        type=click.Path(file_okay=False),
        metavar="DIR",
        help="The witness's folder: its key, the logs it trusts and what it cosigned.",
    )

    @witness.command("init")
    @state_option
    @click.option("--name", required=True, help="The witness's name (a schema-less URL).")
    @json_option("The cosigner key as JSON (the default when piped).")
    def init_cmd(state: str, name: str, as_json: bool) -> None:
        """Create a witness (its key, mode 0600) or keep the one there; print its cosigner
        key, for the logs' and auditors' witnesses files."""
        from ..note import check_key_name
        from ..witness import Witness

        try:
            check_key_name(name)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--name") from exc
        key = Witness.init(state, name)
        if wants_json(as_json):
            emit({"witness": key.name, "cosigner_key": str(key), "state": state})
        else:
            click.echo(str(key))

    @witness.command("add-log")
    @state_option
    @click.argument("vkey")
    @json_option("Each log trusted, as JSON (the default when piped).")
    def add_log_cmd(state: str, vkey: str, as_json: bool) -> None:
        """Trust a log: its verifier key VKEY (rtrace keys show), or a file of them (its
        checkpoints/vkey); a log's origin is its key's name. A running witness takes it at
        once."""
        from pathlib import Path

        from ..errors import NoteError
        from ..witness import Witness

        texts = [vkey]
        if "+" not in vkey or Path(vkey).is_file():
            try:
                texts = [t for t in Path(vkey).read_text().splitlines() if t.strip()]
            except (OSError, UnicodeDecodeError) as exc:
                raise click.BadParameter(f"{vkey}: {exc}", param_hint="VKEY") from exc
        witness = Witness(state)
        for text in texts:
            try:
                key = witness.add_log(text)
            except NoteError as exc:
                raise click.BadParameter(str(exc), param_hint="VKEY") from exc
            if wants_json(as_json):
                emit({"origin": key.name, "vkey": str(key)})
            else:
                click.echo(f"trusting the log {key.name} ({key})")

    @witness.command("serve")
    @state_option
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
    @click.option("--port", default=7380, show_default=True, help="Port to listen on.")
    def serve_cmd(state: str, host: str, port: int) -> None:
        """Serve the witness over HTTP (POST /add-checkpoint; GET /<sha256(origin)>/checkpoint,
        the newest cosigned checkpoint of a log) until interrupted."""
        from ..witness import Witness
        from ..witness_server import serve_witness

        witness = Witness(state, serving=True)
        try:
            server = serve_witness(witness, host, port)
        except OSError as exc:
            witness.close()
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        say(f"witness {witness.key.name} serving at {server.url} ({len(witness.logs())} logs)")
        say(f"its cosigner key: {witness.key}")
        try:
            server.serve_forever()
        finally:
            server.server_close()
            witness.close()

    @witness.command("push")
    @click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=30.0,
        show_default=True,
        metavar="SECONDS",
        help="Give up on the witnesses that have not answered by then (unavailable).",
    )
    @json_option("One JSON object per witness (the default when piped).")
    @click.pass_context
    def push_cmd(ctx: click.Context, timeout: float, as_json: bool) -> None:
        """Send the log's newest checkpoint to each of its witnesses now, all at once, and
        print what each did (cosigned, refused, unavailable); exit 1 unless every witness
        cosigned it."""
        from .context import open_log

        with open_log(ctx) as log:
            outcomes = log.sync_witnesses(deadline=timeout)
        for outcome in outcomes:
            if wants_json(as_json):
                emit(outcome.__dict__)
            else:
                tail = f": {outcome.message}" if outcome.message else ""
                click.echo(f"{outcome.witness}: {outcome.state} (size {outcome.size}){tail}")
        if not outcomes or any(o.state != "cosigned" for o in outcomes):
            ctx.exit(EXIT_FAILED)
