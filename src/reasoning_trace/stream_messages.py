"""Single messages of the stream, looked up by subject and stream seq, and what they hold.

``last_message`` (the newest on a subject), ``message_from`` (the first at a stream seq or
after) and ``last_record`` (a node's newest record, stepping back over foreign messages
after it) are coroutines on a JetStream context: the replicator, async throughout, awaits
them, and ``StreamReader`` (``stream_reader.py``) runs them for synchronous readers.
``record_of``, ``leaf_of`` and ``checkpoint_of`` tell what a message holds, without checking
signatures. ``leaf_of`` is where the stream side decides what a message on a node's decision
subject is: a record of the node, a line of its legacy prefix (leaf ``n`` of the tree, shipped
byte for byte with the message id ``<node>/legacy-<n>-<12 hex of its SHA-256>``: a legacy line
has no seq of its own, so the id states its position), or a foreign message.
Tests: ``tests/test_replicate.py``, ``tests/test_replicate_hostile.py``, ``tests/test_fleet.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .checkpoint import Checkpoint
from .errors import CorruptLine
from .jetstream import decision_subject, node_of
from .legacy import legacy_decision, legacy_id, load
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
    "leaf_id",
    "leaf_of",
    "leaf_or_corrupt",
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


#: What a message holds as a leaf: (seq, record), the record ``None`` for a legacy prefix line
#: that does not parse (a leaf all the same, as locally).
Leaf = tuple[int, Decision | None]


def leaf_id(node: str, seq: int, line: bytes) -> str:
    """The message id a legacy prefix line at position ``seq`` is shipped with."""
    return f"{node}/{legacy_id(seq, line)}"


def leaf_of(data: bytes | None, node: str, headers: Mapping[str, Any] | None) -> Leaf | None:
    """What a message on ``node``'s decision subject (its ``headers`` as NATS gives them)
    holds as a leaf of ``node``'s tree, or ``None`` when it is a foreign message: a record of
    ``node`` (its own seq), or a line of the legacy prefix at the position its message id
    states (read as the local reader does; the id must name ``node`` and the line's hash)."""
    line = data or b""
    d = record_of(line, node)
    if d is not None:
        return d.seq, d
    msg_id = str((headers or {}).get("Nats-Msg-Id", ""))
    owner, _, rest = msg_id.rpartition("/")
    number = rest.split("-")[1] if rest.count("-") == 2 else ""
    if owner != node or not number.isdigit() or leaf_id(node, int(number), line) != msg_id:
        return None
    seq, obj = int(number), load(line)
    if isinstance(obj, dict) and "v" in obj:
        return None  # a record of this product that does not parse is no line of the original
    try:
        return seq, legacy_decision(obj, line, seq)
    except ValueError:
        return seq, None


def leaf_or_corrupt(
    data: bytes | None, headers: Mapping[str, Any] | None, subject: str, sseq: int
) -> Leaf:
    """``leaf_of`` for stream message ``sseq`` on ``subject``, a node's decision subject; a
    foreign message raises ``CorruptLine`` (at ``<subject>#<sseq>``) with the reason."""
    node, where = node_of(subject), f"{subject}#{sseq}"
    leaf = leaf_of(data, node, headers)
    if leaf is not None:
        return leaf
    d = parse_record(data or b"", file=where)  # raises for what is no record
    raise CorruptLine(where, 0, f"a record of node {d.node!r} on {node!r}'s subject")


async def last_record(
    js: JetStreamContext, stream: str, node: str
) -> tuple[RawStreamMsg | None, RawStreamMsg | None]:
    """(the newest message on ``node``'s decision subject, the newest that is a record of
    ``node``): they differ when foreign messages follow the last record. Looks back in
    widening windows, so it reads about as many messages as the foreign ones at the end. A
    line of the legacy prefix counts as a record (``leaf_of``)."""
    subject = decision_subject(node)
    last = await last_message(js, stream, subject)
    if last is None or leaf_of(last.data, node, last.headers) is not None:
        return last, last
    hi, width = last.seq or 1, 64
    while hi > 1:
        lo = max(1, hi - width)
        found, seq = None, lo
        while (msg := await message_from(js, stream, subject, seq)) is not None:
            if (msg.seq or 0) >= hi:
                break
            if leaf_of(msg.data, node, msg.headers) is not None:
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
