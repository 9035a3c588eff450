"""Whether the stream's copy of a node is still this log's history, and all of it: what the
replicator (``replicate.py``) checks before it ships anything.

- ``check_ours``: the stream's newest record (leaf) of the node must be the local leaf of that
  seq.
- ``check_tree``: the local tree at the size of the newest replicated checkpoint must have
  that checkpoint's root; a history rewritten (and re-signed) after replication is a
  ``ForkError`` naming the first record that differs (``first_difference``).
- ``ShippedNote``: how many records a run shipped to a stream as a node, noted in
  ``.rtrace/replicated-<stream>-<node>.json``, so that a stream that lost them is found
  (``StreamLost``, raised by the replicator). Derived: deleting it only loses that check.
Tests: ``tests/test_replicate.py``, ``tests/test_replicate_hostile.py``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .day_files import DayFiles
from .errors import CorruptLine, ForkError
from .jetstream import decision_subject
from .layout import Layout
from .stream_messages import leaf_of
from .tree import Hash

if TYPE_CHECKING:
    from nats.js.api import RawStreamMsg
    from nats.js.client import JetStreamContext

    from .log import DecisionLog

__all__ = ["ShippedNote", "check_ours", "check_tree", "first_difference"]

logger = logging.getLogger("reasoning_trace")


def check_ours(log: DecisionLog, node: str, msg: RawStreamMsg) -> None:
    """The stream's newest record for ``node`` (``msg``) must be ``log``'s record of that seq
    (``ForkError`` otherwise)."""
    data = msg.data or b""
    leaf = leaf_of(data, node, msg.headers)
    assert leaf is not None
    seq = leaf[0]
    try:
        local = next(DayFiles(Layout(log.root)).leaves_from(seq), None)
    except CorruptLine as exc:
        raise ForkError(f"local record {seq} is unreadable: {exc}") from exc
    if local is None or local != data:
        raise ForkError(
            f"the stream holds another record {seq} for node {node!r} than "
            f"{log.root}: the local log was rewritten after replication, or another "
            "log replicates under this node name"
        )


async def check_tree(
    log: DecisionLog, node: str, js: JetStreamContext, stream: str, size: int, root: bytes
) -> None:
    """``log``'s tree of ``size`` records must have ``root``, the newest checkpoint ``node``
    replicated to ``stream`` (``ForkError`` naming the first record that differs otherwise;
    nothing to check when ``size`` is 0)."""
    if not size:
        return
    local = log.tree_root(size)
    if local == root:
        return
    if local is None:
        raise ForkError(
            f"the local log at {log.root} holds {len(log)} records, but node "
            f"{node!r} replicated a checkpoint of {size}: the local log was "
            "truncated or replaced after replication; nothing shipped"
        )
    seq = await first_difference(log, node, js, stream, size)
    if seq is None:
        raise ForkError(
            f"the local records of {log.root} match the {size} replicated "
            "ones, but the cached tree hashes do not: delete "
            f"{Layout(log.root).hashes} (derived) and replicate again; "
            "nothing shipped"
        )
    raise ForkError(
        f"the local log at {log.root} forks from what node {node!r} replicated: "
        f"record {seq} differs, so the trees differ from size {seq + 1} on (the stream's "
        f"checkpoint of size {size} has root "
        f"{Hash(root)}, the local tree "
        f"{Hash(local)}); the local history was rewritten after "
        "replication; nothing shipped"
    )


async def first_difference(
    log: DecisionLog, node: str, js: JetStreamContext, stream: str, size: int
) -> int | None:
    """The first seq below ``size`` whose local record is not the replicated one (read in
    full: this runs only once a fork is certain); ``None`` if every record matches."""
    from nats.js.api import ConsumerConfig, DeliverPolicy

    sub = await js.subscribe(
        decision_subject(node),
        stream=stream,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    try:
        local = DayFiles(Layout(log.root)).leaves_from(0)
        for seq in range(size):
            while True:
                msg = await sub.next_msg(timeout=10)
                if leaf_of(msg.data, node, msg.headers) is not None:
                    break
            mine = next(local, None)
            if mine is None or mine != msg.data:
                return seq
        return None
    finally:
        await sub.unsubscribe()


class ShippedNote:
    """How many records of the log at ``root`` were shipped to ``stream`` as ``node``."""

    def __init__(self, root: Path, stream: str, node: str) -> None:
        self.stream = stream
        self.node = node
        self.path = Layout(root).replicated(stream, node)
        self._noted = -1.0  # monotonic time the note was last written

    def read(self) -> int:
        """The records a run shipped, by the note (0: none, or the note was deleted)."""
        try:
            return int(json.loads(self.path.read_text())["records"])
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("reasoning_trace: %s is unreadable (%s); ignored", self.path, exc)
            return 0

    def write(self, records: int, *, force: bool = False) -> None:
        """Note that the stream holds ``records`` records (at most once a second unless
        ``force``; nothing while it holds none)."""
        now = time.monotonic()
        if not records or (not force and now - self._noted < 1.0):
            return
        self._noted = now
        note = {"stream": self.stream, "node": self.node, "records": records}
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(note, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError as exc:
            logger.warning("reasoning_trace: cannot note replication in %s: %s", tmp, exc)
