"""Writing to the stream: a publish that lands only where its writer expects it, and which
failures are outages worth trying again.

Every publish carries ``Nats-Msg-Id`` (``<node>/<record id>``: node-qualified, because caller
ids may repeat across nodes, and a repeat inside the duplicate window would be dropped as a
duplicate) and ``Nats-Expected-Last-Subject-Sequence``, so a node's history in the stream can
only grow by the message its writer expects: it never forks, whoever else publishes. The
replicator (``replicate.py``, ``exactly_once.py``) and the JetStream store
(``jetstream_store.py``, by ``publish_within``: from synchronous code, retried up to a
deadline) write through ``publish_after``.
Tests: ``tests/test_replicate.py``, ``tests/test_jetstream_store.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ReplicationError
from .retry import retrying

if TYPE_CHECKING:
    from nats.js.api import PubAck
    from nats.js.client import JetStreamContext

    from .stream_reader import StreamReader

__all__ = [
    "WRONG_LAST_SEQUENCE",
    "WrongLastSequence",
    "is_transient",
    "publish_after",
    "publish_within",
]

WRONG_LAST_SEQUENCE = 10071  # JetStream's error code for a failed expected-last-sequence check


class WrongLastSequence(ReplicationError):
    """The subject moved past the message a publish expected: another writer got there
    first, or an earlier try of this very publish landed (read the subject to know which)."""


async def publish_after(
    js: JetStreamContext,
    stream: str,
    subject: str,
    data: bytes,
    msg_id: str,
    expected: int,
    timeout: float,
) -> PubAck:
    """Publish ``data`` only if the subject's last message is stream seq ``expected``.

    Raises ``WrongLastSequence`` when it is not, ``ReplicationError`` when the server refuses
    for good; outages surface as nats-py's own errors (see ``is_transient``).
    """
    from nats.js.errors import APIError

    try:
        return await js.publish(
            subject,
            data,
            timeout=timeout,
            stream=stream,
            headers={
                "Nats-Msg-Id": msg_id,
                "Nats-Expected-Last-Subject-Sequence": str(expected),
            },
        )
    except APIError as exc:
        if exc.err_code == WRONG_LAST_SEQUENCE:
            raise WrongLastSequence(f"{subject} moved past message {expected}") from exc
        if exc.code is not None and exc.code < 500:
            raise ReplicationError(f"JetStream refused: {exc.description}") from exc
        raise


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is an outage worth retrying (a timeout, no responders during an
    election, a lost connection, a 5xx), not an answer."""
    from nats.errors import Error as NatsError
    from nats.js.errors import APIError

    if isinstance(exc, ReplicationError):
        return False
    if isinstance(exc, APIError):  # an answer; only "unavailable" ones are worth a retry
        return exc.code is None or exc.code >= 500
    return isinstance(exc, NatsError | TimeoutError | OSError)


def publish_within(
    reader: StreamReader,
    subject: str,
    data: bytes,
    msg_id: str,
    expected: int,
    timeout: float,
    deadline: float,
) -> int:
    """``publish_after`` from synchronous code, on ``reader``'s connection and stream, each
    try waiting ``timeout`` seconds for its answer, outages retried with backoff for up to
    ``deadline`` seconds. Returns the message's stream seq; raises ``WrongLastSequence`` as
    ``publish_after`` does, and ``ReplicationError`` when no answer came in time (the outcome
    is then unknown: the message may have landed)."""
    try:
        for attempt in retrying(first=0.05, most=1.0, retry_on=is_transient, within=deadline):
            with attempt:
                ack = reader.bridge.run(
                    publish_after(
                        reader.js, reader.stream, subject, data, msg_id, expected, timeout
                    )
                )
    except Exception as problem:
        if not is_transient(problem):
            raise
        raise ReplicationError(
            f"JetStream did not answer within {deadline:g} s ({problem!r})"
        ) from problem
    return ack.seq  # the loop ends only after a try that answered
