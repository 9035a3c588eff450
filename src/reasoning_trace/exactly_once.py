"""Publishing a node's messages to the stream exactly once and in order, through outages:
how the replicator (``replicate.py``) writes.

Each publish expects the subject's last message (``publish_after``, ``stream_writer.py``) and
is retried with backoff (``retry.py``) while the server is away or electing a leader. A
retried publish whose first try did land is answered "duplicate" (inside the duplicate
window) or, notably on a 3-replica stream after a leader change, "wrong last sequence": both
are resolved by reading the subject; only a record of another history there is a fork
(``ForkError``: another writer publishes as this node). Foreign messages found there are
reported and stepped over, their positions never re-used. A refused user
(``AuthorizationError``) and a stream deleted under the replicator (``StreamLost``) are not
outages and end the retrying. ``ReplicationStatus`` is here because publishing counts into
it (retries, resolutions, foreign messages); ``replicate.py`` re-exports it.
Tests: ``tests/test_replicate.py``, ``tests/test_replicate_hostile.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from .errors import ForkError, StreamLost
from .jetstream import AuthorizationError, Problems, Stopped, decision_subject
from .retry import async_retrying
from .stream_messages import last_message, leaf_of, message_from
from .stream_writer import WrongLastSequence, is_transient, publish_after

if TYPE_CHECKING:
    from nats.js.api import RawStreamMsg
    from nats.js.client import JetStreamContext

__all__ = ["Publisher", "ReplicationStatus"]

logger = logging.getLogger("reasoning_trace")
T = TypeVar("T")


@dataclass
class ReplicationStatus:
    """What a replicator has done: records and checkpoints shipped, how far, how late."""

    node: str
    next_seq: int = 0  # the first local seq not yet in the stream
    records: int = 0  # records published by this run
    checkpoints: int = 0  # checkpoints published by this run
    retries: int = 0  # publishes retried (timeouts, outages, elections)
    resolved: int = 0  # retries answered "wrong last sequence" that had in fact landed
    foreign: list[tuple[str, int]] = field(default_factory=list)  # (subject, stream seq) skipped
    lags: list[float] = field(default_factory=list)  # seconds from record to ack (last 100k)


class Publisher:
    """Publishes node ``status.node``'s messages to ``stream`` exactly once (see the module
    docstring), waiting ``ack_timeout`` seconds for each answer. ``problems``: what the
    connection heard from the server; ``shown_url``: the server, as messages name it."""

    def __init__(
        self,
        stream: str,
        shown_url: str,
        problems: Problems,
        status: ReplicationStatus,
        ack_timeout: float,
    ) -> None:
        self.stream = stream
        self.shown_url = shown_url
        self.node = status.node
        self.status = status
        self.ack_timeout = ack_timeout
        self._problems = problems
        self._subject = decision_subject(self.node)

    def foreign(self, subject: str, sseq: int, what: str) -> None:
        """Report a message on one of this node's subjects that is not its own, and step
        over it."""
        self.status.foreign.append((subject, sseq))
        logger.warning(
            "reasoning_trace: stream %s message %d on %s is not %s's (%s): someone else "
            "published there; it is skipped, and replication continues after it",
            self.stream,
            sseq,
            subject,
            self.node,
            what,
        )

    async def retrying(
        self, js: JetStreamContext, stop: Callable[[], bool], call: Callable[[], Awaitable[T]]
    ) -> T:
        """Await ``call()`` until it answers, riding out outages and elections; ``Stopped``
        once ``stop()`` is true."""
        async for attempt in async_retrying(first=0.05, most=1.0, retry_on=is_transient):
            with attempt:
                if stop():
                    raise Stopped("asked to stop")
                try:
                    answer = await call()
                except Exception as exc:
                    if is_transient(exc):  # else an answer (a fork, a refusal): not an outage
                        await self._outage(js, exc)
                    raise
        return answer  # the loop ends only after a try that answered

    async def _outage(self, js: JetStreamContext, problem: BaseException) -> None:
        """Count and log an outage about to be retried; a refused user or a deleted stream
        is not one (``AuthorizationError``, ``StreamLost``)."""
        from nats.errors import NoRespondersError
        from nats.js.errors import NoStreamResponseError

        if self._problems.denied:
            raise AuthorizationError(
                f"the NATS server at {self.shown_url} refuses this user publishing on "
                f"{self._problems.denied[-1]}: these credentials are not node "
                f"{self.node!r}'s (give --node the name they may publish as)"
            )
        if isinstance(problem, NoRespondersError | NoStreamResponseError):
            await self._check_stream_exists(js)
        self.status.retries += 1
        if self.status.retries == 1 or self.status.retries % 50 == 0:
            logger.warning("reasoning_trace: JetStream unavailable (%r); retrying", problem)

    async def _check_stream_exists(self, js: JetStreamContext) -> None:
        """Nobody answers a publish: unless the server is electing a leader, the stream is
        gone, deleted under a running replicator (``StreamLost``)."""
        from nats.js.errors import NotFoundError

        try:
            await js.stream_info(self.stream)
        except NotFoundError:
            raise StreamLost(
                f"stream {self.stream!r} was deleted from {self.shown_url} while it held "
                f"records 0..{self.status.next_seq - 1} of node {self.node!r}: an incident "
                "to report; afterwards, replicate with --reship to ship this log again"
            ) from None
        except Exception as exc:
            if not is_transient(exc):
                raise

    async def publish(
        self,
        js: JetStreamContext,
        stop: Callable[[], bool],
        subject: str,
        data: bytes,
        msg_id: str,
        expected: int,
    ) -> int:
        """Publish one message expecting ``expected`` as the subject's last; return the
        subject's last stream seq after it (its own, unless foreign messages followed)."""
        first = True
        while True:
            try:
                ack = await self.retrying(
                    js,
                    stop,
                    lambda after=expected: publish_after(  # type: ignore[misc]
                        js, self.stream, subject, data, msg_id, after, self.ack_timeout
                    ),
                )
                return ack.seq
            except WrongLastSequence:
                pass
            # Did an earlier try land, or did someone else publish? The subject says.
            last = await self.retrying(js, stop, lambda: last_message(js, self.stream, subject))
            if last is None:
                raise StreamLost(
                    f"{subject} in stream {self.stream!r} is empty, but it held message "
                    f"{expected}: the stream was re-created or emptied; an incident to report"
                )
            if last.data == data:
                self.status.resolved += 1
                return last.seq or 0
            if last.seq == expected and first:
                first = False  # the server's view was stale: try once more
                continue
            newer = await self.retrying(
                js,
                stop,
                lambda a=expected, b=last.seq or 0: self._messages_between(  # type: ignore[misc]
                    js, subject, a, b
                ),
            )
            if any(m.data == data for m in newer):
                self.status.resolved += 1  # it landed; foreign messages followed it
                for m in newer:
                    if m.data != data:
                        self.foreign(subject, m.seq or 0, "published after this node's")
                return last.seq or 0
            for m in newer:
                if subject == self._subject and leaf_of(m.data, self.node, m.headers) is not None:
                    raise ForkError(
                        f"{subject} in stream {self.stream!r} moved on to message {m.seq} "
                        f"(expected {expected}), a record of another history: another writer "
                        f"publishes as node {self.node!r}"
                    )
            for m in newer:
                self.foreign(subject, m.seq or 0, "not a record of this log")
            expected = last.seq or 0  # step over them; never re-use their positions
            first = True

    async def _messages_between(
        self, js: JetStreamContext, subject: str, after: int, upto: int
    ) -> list[RawStreamMsg]:
        """The messages on ``subject`` with ``after`` < stream seq <= ``upto``."""
        found = []
        seq = after + 1
        while seq <= upto and (msg := await message_from(js, self.stream, subject, seq)):
            if (msg.seq or 0) > upto:
                break
            found.append(msg)
            seq = (msg.seq or seq) + 1
        return found
