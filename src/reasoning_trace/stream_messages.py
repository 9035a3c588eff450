"""Single messages of the stream, looked up by subject and stream seq, and what they hold.

``last_message`` (the newest on a subject), ``message_from`` (the first at a stream seq or
after) and ``last_record`` (a node's newest record, stepping back over foreign messages
after it) are coroutines on a JetStream context: the replicator, async throughout, awaits
them, and ``StreamReader`` (``stream_reader.py``) runs them for synchronous readers.
``record_of`` and ``checkpoint_of`` tell what a message holds, without checking signatures.
Tests: ``tests/test_replicate.py``, ``tests/test_replicate_hostile.py``, ``tests/test_fleet.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .checkpoint import Checkpoint
from .errors import CorruptLine
from .jetstream import decision_subject
from .note import split_note
from .record import Decision, parse_record

if TYPE_CHECKING:
    from nats.js.api import RawStreamMsg
    from nats.js.client import JetStreamContext

__all__ = [
    "checkpoint_of",
    "checkpoint_size",
    "last_message",
    "last_record",
    "message_from",
    "record_of",
]


async def last_message(js: JetStreamContext, stream: str, subject: str) -> RawStreamMsg | None:
    """The newest message on ``subject`` (``None`` if it has none)."""
    from nats.js.errors import NotFoundError

    try:
        return await js.get_last_msg(stream, subject)
    except NotFoundError:
        return None


async def message_from(
    js: JetStreamContext, stream: str, subject: str, seq: int
) -> RawStreamMsg | None:
    """The first message on ``subject`` at stream seq ``seq`` or after (``None``: none)."""
    from nats.js.errors import NotFoundError

    try:
        return await js.get_msg(stream, max(1, seq), subject=subject, next=True)
    except NotFoundError:
        return None


def record_of(data: bytes | None, node: str) -> Decision | None:
    """The record a message on ``node``'s decision subject holds, or ``None`` when it is a
    foreign message: not a record, or a record that names another node."""
    try:
        d = parse_record(data or b"")
    except CorruptLine:
        return None
    return d if d.node in (None, node) else None


async def last_record(
    js: JetStreamContext, stream: str, node: str
) -> tuple[RawStreamMsg | None, RawStreamMsg | None]:
    """(the newest message on ``node``'s decision subject, the newest that is a record of
    ``node``): they differ when foreign messages follow the last record. Looks back in
    widening windows, so it reads about as many messages as the foreign ones at the end."""
    subject = decision_subject(node)
    last = await last_message(js, stream, subject)
    if last is None or record_of(last.data, node) is not None:
        return last, last
    hi, width = last.seq or 1, 64
    while hi > 1:
        lo = max(1, hi - width)
        found, seq = None, lo
        while (msg := await message_from(js, stream, subject, seq)) is not None:
            if (msg.seq or 0) >= hi:
                break
            if record_of(msg.data, node) is not None:
                found = msg
            seq = (msg.seq or seq) + 1
        if found is not None:
            return last, found
        hi, width = lo, width * 4
    return last, None


def checkpoint_size(note: bytes) -> int:
    """The tree size of a replicated checkpoint note (its signature is not checked here)."""
    return checkpoint_of(note).size


def checkpoint_of(note: bytes) -> Checkpoint:
    """The checkpoint a replicated note states (its signature is not checked here)."""
    return Checkpoint.parse(split_note(note)[0])
