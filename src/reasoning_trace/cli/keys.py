"""``rtrace keys init``, ``show`` and ``rotate``: the log's signing key (kept outside the log)
and the verifier keys it published (``keys``, ``origin``).

Tests: ``tests/test_cli_integrity.py``, ``tests/test_origin.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .context import log_root, open_log
from .output import EXIT_FAILED, emit, json_option, say, wants_json

if TYPE_CHECKING:
    from ..note import Verifier

__all__ = ["register"]


def _print_keys(found: list[Verifier], as_json: bool) -> None:
    """Verifier keys, the newest last: one a line, or piped one JSON object each
    (``verifier_key``, ``name``, ``key_id`` as 8 hex digits)."""
    for n, verifier in enumerate(found, 1):
        if wants_json(as_json):
            emit(
                {
                    "verifier_key": str(verifier),
                    "name": verifier.name,
                    "key_id": f"{verifier.id:08x}",
                    "current": n == len(found),
                }
            )
        else:
            click.echo(str(verifier))


@click.group()
def keys() -> None:
    """The signing key (kept outside the log) and the published verifier keys.

    Each log has its own origin (the name of its checkpoints and of its key) and so its
    own key file: a new log's origin is reasoning-trace/<hostname>/<folder>-<8 hex>,
    unless --origin or $REASONING_TRACE_ORIGIN names one. A log keeps its origin when
    its folder is moved or copied; a log that signs as reasoning-trace/<hostname> (every
    log's, before) keeps it and that host-wide key.
    """


@keys.command("init")
@click.option(
    "--origin",
    help="The log's origin (checkpoint origin and key name) for a new log; refused if the "
    "log already signs as another. Default: $REASONING_TRACE_ORIGIN, else the log's own, "
    "else reasoning-trace/<hostname>/<folder>-<8 hex>.",
)
@click.option(
    "--shared-ok",
    is_flag=True,
    help="Let a new log sign with the existing key file of its origin although that key "
    "belongs to another log (shared on purpose, or made for this log). Without it that is "
    "refused: each log has a key of its own.",
)
@json_option("The verifier key as a JSON object (the default when piped).")
@click.pass_context
def keys_init(ctx: click.Context, origin: str | None, shared_ok: bool, as_json: bool) -> None:
    """Create the signing key if there is none; publish and print its verifier key.

    Creates the log's folder if missing. A new log whose origin (--origin or
    $REASONING_TRACE_ORIGIN) already has a key file is refused, since that key is another
    log's, unless --shared-ok.
    """
    from ..keys import init_key
    from ..origin import check_origin

    if origin is not None:
        check_origin(origin, "--origin")
    signer = init_key(log_root(ctx), origin, source="--origin", shared_ok=shared_ok)
    _print_keys([signer.verifier], as_json)


@keys.command("show")
@json_option("One JSON object per key (the default when piped).")
@click.pass_context
def keys_show(ctx: click.Context, as_json: bool) -> None:
    """Print every verifier key the log published (the current one last); exit 1 if none."""
    with open_log(ctx) as log:
        found = log.checkpoints.verifiers()
    if not found:
        say("rtrace: no verifier key published yet (rtrace keys init)")
        ctx.exit(EXIT_FAILED)
    _print_keys(found, as_json)


@keys.command("rotate")
@click.option(
    "--origin",
    help="Move the log to this new origin, with a new key in a key file of its own; "
    "earlier checkpoints keep their origin and still verify. Refused if a key for that "
    "origin exists already (another log's).",
)
@click.option(
    "--shared-ok",
    is_flag=True,
    help="Rotate a key that other logs may sign with too (a host-wide origin "
    "reasoning-trace/<hostname>, or other logs listed in the key's .logs file): they "
    "switch to the new key too.",
)
@json_option("The new verifier key as a JSON object (the default when piped).")
@click.pass_context
def keys_rotate(ctx: click.Context, origin: str | None, shared_ok: bool, as_json: bool) -> None:
    """Make a new signing key; the old verifier keys stay published (old checkpoints
    keep verifying) and the old key file is kept beside the new one.

    Needs an existing log with a key (keys init starts one) that this process can write.
    Only this log's key changes: a key that other logs may sign with too (the host-wide
    origin reasoning-trace/<hostname>, every log's before logs had their own; or a key
    whose .logs file lists other logs) is refused unless --shared-ok (all of them change
    key), or --origin moves this log to an origin and key of its own (the message names
    one). With --origin the log's records so far are signed at once under the new
    origin. A key file named by $REASONING_TRACE_KEY is rotated in place. Refused or
    failed, nothing changes. Restart running writers afterwards.
    """
    from ..keys import rotate_log_key
    from ..origin import check_origin

    if origin is not None:
        check_origin(origin, "--origin")
    done = rotate_log_key(log_root(ctx), origin, shared_ok=shared_ok)
    note = None
    if done.moved:
        with open_log(ctx) as log:
            note = log.checkpoint() if len(log) else None
    if wants_json(as_json):
        _print_keys([done.signer.verifier], True)
    else:
        click.echo(f"new key: {done.signer.verifier}")
    if done.retired is not None:
        say(f"old signing key kept at {done.retired}")
    if done.moved:
        say(f"origin: {done.previous} -> {done.origin} (key file {done.path})")
        if note is not None:
            click.echo(f"signed under the new origin:\n{note}", err=True, nl=False)


def register(cli: click.Group) -> None:
    """Add ``keys`` and its commands to the ``rtrace`` group."""
    cli.add_command(keys)
