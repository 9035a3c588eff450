"""JetStream: the stream that holds a fleet's replicated logs, and how to reach it.

One stream (``RTRACE`` by default) holds every node's history on subjects of its own:

- ``rtrace.<node>.decision``: the node's stored lines, byte for byte, in seq order;
- ``rtrace.<node>.checkpoint``: its signed checkpoint notes, each published only after the
  records it covers;
- ``rtrace.<node>.key``: the verifier keys it published (newline-separated).

Every publish carries ``Nats-Msg-Id`` (``<node>/<record id>``: node-qualified, because caller
ids may repeat across nodes, and a repeat inside the duplicate window would be dropped as a
duplicate) and ``Nats-Expected-Last-Subject-Sequence``, so a node's history in the stream can
only grow by the message its writer expects: it never forks, whoever else publishes.

The stream is created, or checked, with file storage, no age, count or size limit, discard
new, and deletes, purges and rollups refused. Only features of nats-server 2.9 are used (the
server silently ignores newer settings). Needs the ``[nats]`` extra (``nats-py``).
Tests: ``tests/test_replicate.py``, ``tests/test_fleet.py``, ``tests/test_jetstream_store.py``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from .checkpoint import Checkpoint
from .errors import ReplicationError, StreamConfigError
from .note import split_note

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.api import PubAck, RawStreamMsg, StreamConfig, StreamInfo
    from nats.js.client import JetStreamContext

__all__ = [
    "DEFAULT_STREAM",
    "Bridge",
    "WrongLastSequence",
    "check_node",
    "checkpoint_size",
    "checkpoint_subject",
    "connect",
    "decision_subject",
    "default_node",
    "ensure_stream",
    "expiry_risks",
    "is_transient",
    "key_subject",
    "last_message",
    "publish_after",
    "stream_config",
]

logger = logging.getLogger("reasoning_trace")

DEFAULT_STREAM = "RTRACE"
PREFIX = "rtrace"
WRONG_LAST_SEQUENCE = 10071  # JetStream's error code for a failed expected-last-sequence check
_NODE = re.compile(r"[A-Za-z0-9_-]{1,64}")

T = TypeVar("T")


def check_node(node: str) -> str:
    """Return ``node`` if it can be one subject token (letters, digits, ``_``, ``-``)."""
    if not isinstance(node, str) or not _NODE.fullmatch(node):
        raise ValueError(
            f"node name {node!r} must be 1-64 letters, digits, '_' or '-' "
            "(it is a NATS subject token)"
        )
    return node


def default_node() -> str:
    """This host's name, up to its first dot, as a subject token."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".", 1)[0])[:64]
    return name or "node"


def decision_subject(node: str) -> str:
    """The subject holding ``node``'s records (``*``: every node's)."""
    return f"{PREFIX}.{node}.decision"


def checkpoint_subject(node: str) -> str:
    """The subject holding ``node``'s signed checkpoints."""
    return f"{PREFIX}.{node}.checkpoint"


def key_subject(node: str) -> str:
    """The subject holding ``node``'s verifier keys."""
    return f"{PREFIX}.{node}.key"


def node_of(subject: str) -> str:
    """The node a ``rtrace.<node>.<kind>`` subject belongs to."""
    return subject.split(".")[1]


def parse_servers(url: str) -> list[str]:
    """``nats://a:4222,nats://b:4222`` (or a single URL) as a list; refuses other schemes."""
    servers = [u.strip() for u in url.split(",") if u.strip()]
    if not servers:
        raise ValueError("no NATS server URL given")
    for u in servers:
        if not re.match(r"(nats|tls)://", u):
            raise ValueError(f"{u!r} is not a NATS URL (nats://host:port)")
    return servers


async def _quiet(exc: Exception) -> None:
    logger.debug("reasoning_trace: NATS connection: %r", exc)


async def connect(url: str, *, name: str = "rtrace", wait: bool = False) -> Client:
    """Connect to the NATS servers in ``url``; reconnect forever once connected.

    ``wait``: keep trying until a server answers (a replicator outlives an outage); otherwise
    fail with ``ReplicationError`` after a few attempts.
    """
    import nats
    from nats.errors import NoServersError

    try:
        nc = await nats.connect(
            servers=parse_servers(url),
            name=name,
            connect_timeout=2,
            reconnect_time_wait=0.25,
            max_reconnect_attempts=-1 if wait else 2,
            error_cb=_quiet,
        )
    except (TimeoutError, NoServersError, OSError) as exc:
        raise ReplicationError(f"no NATS server answers at {url}: {exc!r}") from exc
    nc.options["max_reconnect_attempts"] = -1  # connected once: ride out outages
    return nc


def stream_config(name: str = DEFAULT_STREAM, replicas: int = 1) -> StreamConfig:
    """The configuration the product creates: nothing in it can make history go away."""
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

    return StreamConfig(
        name=name,
        description="reasoning-trace: replicated decision logs (append-only)",
        subjects=[f"{PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        max_age=0,
        max_msgs=-1,
        max_bytes=-1,
        max_msgs_per_subject=-1,
        discard=DiscardPolicy.NEW,
        deny_delete=True,
        deny_purge=True,
        allow_rollup_hdrs=False,
        duplicate_window=120.0,
    )


def expiry_risks(config: StreamConfig) -> list[str]:
    """What in ``config`` would let replicated history expire or be removed (empty: nothing)."""
    risks = []
    if config.max_age:
        risks.append(f"max_age is {config.max_age:g} s: older records expire")
    for field, what in (
        ("max_msgs", "messages"),
        ("max_bytes", "bytes"),
        ("max_msgs_per_subject", "messages per subject"),
    ):
        limit = getattr(config, field)
        if limit is not None and limit > 0:
            discard = getattr(config.discard, "value", config.discard)
            fate = "new records are refused" if discard == "new" else "old records are discarded"
            risks.append(f"{field} is {limit} {what}: beyond it {fate}")
    if not config.deny_delete:
        risks.append("deny_delete is off: single records can be deleted")
    if not config.deny_purge:
        risks.append("deny_purge is off: the stream can be purged")
    if config.allow_rollup_hdrs:
        risks.append("allow_rollup_hdrs is on: a rollup message erases a subject's history")
    if getattr(config.storage, "value", config.storage) == "memory":
        risks.append("storage is memory: history does not survive a server restart")
    retention = getattr(config.retention, "value", config.retention)
    if retention not in (None, "limits"):
        risks.append(f"retention is {retention}: messages are removed once consumed")
    return risks


async def ensure_stream(
    js: JetStreamContext,
    name: str = DEFAULT_STREAM,
    *,
    replicas: int = 1,
    create: bool = True,
    strict: bool = True,
) -> StreamInfo:
    """Create the stream (``create``) or check it: it must hold ``rtrace.>`` and, if
    ``strict``, have no setting under which history could go (``StreamConfigError``)."""
    from nats.js.errors import APIError, NotFoundError

    try:
        info = await js.stream_info(name)
    except NotFoundError:
        if not create:
            raise ReplicationError(f"there is no stream {name!r} on the server") from None
        try:
            info = await js.add_stream(stream_config(name, replicas))
        except APIError as exc:
            raise ReplicationError(f"cannot create stream {name!r}: {exc.description}") from exc
        logger.info("reasoning_trace: created stream %s (%d replicas)", name, replicas)
    except APIError as exc:
        raise ReplicationError(f"cannot read stream {name!r}: {exc.description}") from exc
    subjects = info.config.subjects or []
    if f"{PREFIX}.>" not in subjects:
        raise StreamConfigError(
            f"stream {name!r} holds {subjects}, not {PREFIX}.>: it is not a reasoning-trace stream"
        )
    have = info.config.num_replicas or 1
    if have < replicas:
        logger.warning(
            "reasoning_trace: stream %s keeps %d replica(s), fewer than the %d asked for",
            name,
            have,
            replicas,
        )
    risks = expiry_risks(info.config)
    if strict and risks:
        raise StreamConfigError(f"stream {name!r} would not keep history: " + "; ".join(risks))
    return info


async def last_message(js: JetStreamContext, stream: str, subject: str) -> RawStreamMsg | None:
    """The newest message on ``subject`` (``None`` if it has none)."""
    from nats.js.errors import NotFoundError

    try:
        return await js.get_last_msg(stream, subject)
    except NotFoundError:
        return None


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


def checkpoint_size(note: bytes) -> int:
    """The tree size of a replicated checkpoint note (its signature is not checked here)."""
    return Checkpoint.parse(split_note(note)[0]).size


class Bridge:
    """An event loop in a daemon thread, so synchronous code can await NATS calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="rtrace-nats", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and return its result (its exception is raised here)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop and its thread."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
