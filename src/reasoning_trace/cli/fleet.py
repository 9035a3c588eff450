"""``rtrace replicate``: ship this node's log to a JetStream stream (fleet mode).

Tests: ``tests/test_replicate.py``, ``tests/test_replicate_hostile.py``, ``tests/test_fleet.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .output import emit, json_option, wants_json

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["register"]


def register(cli: click.Group) -> None:
    """Add ``replicate`` to the ``rtrace`` group."""

    @cli.command()
    @click.option(
        "--nats",
        "url",
        required=True,
        metavar="nats://HOST:PORT[,…]",
        help="The NATS server(s) holding the stream (several for a cluster, comma-separated).",
    )
    @click.option(
        "--node",
        help="This node's name in the stream's subjects (default: the host name).",
    )
    @click.option(
        "--replicas",
        default=1,
        show_default=True,
        help="Replicas if the stream has to be created (3 on a three-node cluster).",
    )
    @click.option(
        "--once",
        is_flag=True,
        help="Stop when the stream holds every record and checkpoint (default: keep going).",
    )
    @click.option(
        "--reship",
        is_flag=True,
        help="After a reported incident (the stream lost this node's history): create the "
        "stream again if need be and ship this log from seq 0.",
    )
    @json_option("When it stops, what was replicated as one JSON object (the default when piped).")
    @click.pass_context
    def replicate(
        ctx: click.Context,
        url: str,
        node: str | None,
        replicas: int,
        once: bool,
        reship: bool,
        as_json: bool,
    ) -> None:
        """Replicate this log's records and checkpoints to JetStream, exactly once, in order.

        Waits for a server, says so, and resumes where the stream's copy ends; rides out
        outages and leader elections (the local log is the buffer). Stops on Ctrl-C or
        SIGTERM. Exit 1 when the local history forks from what was replicated or the stream
        lost it (an incident); 2 on refused credentials or a bad URL.
        """
        if ctx.obj.get("source") is not None:
            raise click.UsageError("replicate ships a local log: give --nats, not --source")
        from .context import require_extra

        require_extra("fleet mode", "nats", "nats")
        import logging
        import signal
        import threading

        from ..errors import IntegrityError, ReplicationError
        from ..replicate import Replicator, StreamLost

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        try:
            replicator = Replicator(
                ctx.obj["root"],
                url,
                node=node,
                stream=ctx.obj["stream"],
                replicas=replicas,
                reship=reship,
            )
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            status = replicator.run(stop.is_set, until_caught_up=once)
        except (IntegrityError, StreamLost) as exc:
            click.echo(f"rtrace: {exc}", err=True)
            ctx.exit(1)
        except ReplicationError as exc:
            click.echo(f"rtrace: {exc}", err=True)
            ctx.exit(2)
        if status.foreign:
            click.echo(
                f"rtrace: {len(status.foreign)} foreign message(s) on {status.node}'s subjects "
                "were stepped over: "
                + ", ".join(f"{subject} #{seq}" for subject, seq in status.foreign[:10]),
                err=True,
            )
        if wants_json(as_json):
            emit(
                {
                    "node": status.node,
                    "records": status.records,
                    "checkpoints": status.checkpoints,
                    "next_seq": status.next_seq,
                    "retries": status.retries,
                    "resolved": status.resolved,
                    "foreign": len(status.foreign),
                }
            )
        if stop.is_set() and not status.records and not status.next_seq:
            click.echo(f"stopped: nothing of {status.node} was replicated", err=True)
            return
        held = f"seqs 0..{status.next_seq - 1}" if status.next_seq else "none of its records"
        click.echo(
            f"replicated {status.records} records and {status.checkpoints} checkpoints of "
            f"{status.node}; the stream holds {held} "
            f"({status.retries} retries, {status.resolved} resolved as already stored)",
            err=True,
        )
