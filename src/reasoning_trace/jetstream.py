"""JetStream: the stream that holds a fleet's replicated logs, and how to reach it.

One stream (``RTRACE`` by default) holds every node's history on subjects of its own:

- ``rtrace.<node>.decision``: the node's stored lines, byte for byte, in seq order;
- ``rtrace.<node>.checkpoint``: its signed checkpoint notes, each published only after the
  records it covers;
- ``rtrace.<node>.key``: the verifier keys it published (newline-separated).

This module names the subjects, connects to the servers (credentials never shown, outages
waited out) and creates or checks the stream: file storage, no age, count or size limit,
discard new, and deletes, purges and rollups refused. Only features of nats-server 2.9 are
used (the server silently ignores newer settings). Needs the ``[nats]`` extra (``nats-py``).
Writing to the stream is ``stream_writer.py``; reading it, ``stream_reader.py``.
Tests: ``tests/test_replicate.py``, ``tests/test_fleet.py``, ``tests/test_jetstream_store.py``.
"""

from __future__ import annotations

import logging
import re
import socket
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import ReplicationError, StreamConfigError, UsageError
from .retry import async_retrying

if TYPE_CHECKING:
    import tenacity
    from nats.aio.client import Client
    from nats.js.api import StreamConfig, StreamInfo
    from nats.js.client import JetStreamContext

__all__ = [
    "DEFAULT_STREAM",
    "AuthorizationError",
    "Problems",
    "Stopped",
    "check_node",
    "check_stream",
    "checkpoint_subject",
    "connect",
    "decision_subject",
    "default_node",
    "ensure_stream",
    "expiry_risks",
    "key_subject",
    "node_of",
    "parse_servers",
    "redact_url",
    "server_is_open",
    "stream_config",
]

logger = logging.getLogger("reasoning_trace")

DEFAULT_STREAM = "RTRACE"
PREFIX = "rtrace"
_NODE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_node(node: str) -> str:
    """Return ``node`` if it can be one subject token (letters, digits, ``_``, ``-``)."""
    if not isinstance(node, str) or not _NODE.fullmatch(node):
        raise UsageError(
            f"node name {node!r} must be 1-64 letters, digits, '_' or '-' "
            "(it is a NATS subject token)"
        )
    return node


def check_stream(name: str) -> str:
    """Return ``name`` if it can name a JetStream stream here (1-64 letters, digits, ``_`` or
    ``-``: no ``.``, ``*``, ``>``, space or path separator, which NATS refuses or reads as
    subjects); else ``UsageError``."""
    if not isinstance(name, str) or not _NODE.fullmatch(name):
        raise UsageError(f"stream name {name!r} must be 1-64 letters, digits, '_' or '-'")
    return name


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
    """``nats://a:4222,nats://b:4222`` (or a single URL) as a list. ``host:port`` without a
    scheme means ``nats://host:port``; other schemes, a missing host and a port outside
    1-65535 are refused (``UsageError``)."""
    servers = [u.strip() for u in url.split(",") if u.strip()]
    if not servers:
        raise UsageError("no NATS server URL given")
    out = []
    for u in servers:
        if "://" not in u:
            u = f"nats://{u}"
        if not re.match(r"(nats|tls)://[^/]", u):
            raise UsageError(f"{redact_url(u)!r} is not a NATS URL (nats://host:port)")
        try:
            parts = urllib.parse.urlsplit(u)
            port, host = parts.port, parts.hostname  # reading .port checks it is 0-65535
        except ValueError as exc:
            raise UsageError(f"{redact_url(u)!r} is not a NATS URL ({exc})") from None
        if not host or port == 0:
            raise UsageError(f"{redact_url(u)!r} is not a NATS URL (nats://host:port)")
        out.append(u)
    return out


def redact_url(url: str) -> str:
    """``url`` (or a comma-separated list) with passwords and tokens replaced by ``***``."""

    def one(u: str) -> str:
        scheme, sep, rest = u.strip().partition("://")
        if not sep:
            scheme, rest = "", u.strip()
        userinfo, at, host = rest.rpartition("@")
        if not at:
            return u.strip()
        user, colon, _ = userinfo.partition(":")
        hidden = f"{user}:***" if colon else "***"  # no password: the user part is a token
        return f"{scheme}{sep}{hidden}@{host}"

    return ",".join(one(u) for u in url.split(",") if u.strip())


class AuthorizationError(ReplicationError):
    """The NATS server refused these credentials, or refused this user a subject."""


@dataclass
class Problems:
    """What the server told a connection asynchronously: the last connection error and the
    subjects it refused this user (nats-py reports both through its error callback only)."""

    last: BaseException | None = None
    refusal: str | None = None  # the server's refusal of the credentials, if it refused them
    denied: list[str] = field(default_factory=list)

    async def note(self, exc: Exception) -> None:
        """nats-py's error callback."""
        logger.debug("reasoning_trace: NATS connection: %r", exc)
        text = str(exc)
        if "permissions violation" in text.lower():
            found = re.search(r'to "([^"]+)"', text)
            self.denied.append(found.group(1) if found else text)
            return
        if "authorization" in text.lower() or "authentication" in text.lower():
            self.refusal = text
        self.last = exc

    @property
    def unauthorized(self) -> bool:
        """Whether the server refused the credentials."""
        return self.refusal is not None

    def refused(self, subject: str) -> bool:
        """Whether the server refused this user publishing on ``subject``."""
        return subject in self.denied


async def connect(
    url: str,
    *,
    name: str = "rtrace",
    wait: bool = False,
    stop: Callable[[], bool] | None = None,
    problems: Problems | None = None,
) -> Client:
    """Connect to the NATS servers in ``url``; reconnect forever once connected.

    ``wait``: keep trying until a server answers (a replicator outlives an outage), saying so
    in the log, until ``stop()`` is true (``Stopped``); otherwise fail with
    ``ReplicationError`` after a few attempts. Refused credentials fail at once
    (``AuthorizationError``). No message shows a password.
    """
    import nats
    from nats.errors import NoServersError

    servers = parse_servers(url)
    shown = redact_url(url)
    problems = problems if problems is not None else Problems()
    stopped = stop or (lambda: False)

    def unreachable(exc: BaseException) -> bool:
        return isinstance(exc, TimeoutError | NoServersError | OSError) and not (
            problems.unauthorized
        )

    tries = async_retrying(
        first=0.1,
        most=2.0,
        retry_on=unreachable,
        stop=stopped if wait else None,
        attempts=None if wait else 2,
        before_sleep=(lambda state: _waiting(shown, state, problems)) if wait else None,
    )
    try:
        async for attempt in tries:
            with attempt:
                if stopped():
                    raise Stopped(f"stopped while waiting for a NATS server at {shown}")
                problems.last = problems.refusal = None
                nc = await nats.connect(
                    servers=servers,
                    name=name,
                    connect_timeout=2,
                    reconnect_time_wait=0.25,
                    max_reconnect_attempts=1,
                    allow_reconnect=True,
                    error_cb=problems.note,
                )
    except (TimeoutError, NoServersError, OSError) as exc:
        if problems.unauthorized:
            raise AuthorizationError(
                f"the NATS server at {shown} refused the credentials ({problems.refusal}): "
                "check the user and password in the URL"
            ) from None
        if stopped():
            raise Stopped(f"stopped while waiting for a NATS server at {shown}") from None
        cause = problems.last or exc
        raise ReplicationError(f"no NATS server answers at {shown}: {cause!r}") from None
    nc.options["max_reconnect_attempts"] = -1  # connected once: ride out outages
    return nc


def _waiting(shown: str, state: tenacity.RetryCallState, problems: Problems) -> None:
    n = state.attempt_number
    if n == 1 or n % 30 == 0:
        logger.warning(
            "reasoning_trace: waiting for a NATS server at %s (%s); Ctrl-C to stop",
            shown,
            problems.last or (state.outcome.exception() if state.outcome else "no answer"),
        )


class Stopped(ReplicationError):
    """The caller asked to stop: while waiting for a server, or between tries of a request."""


def server_is_open(nc: Client) -> bool:
    """Whether the server lets anyone in without credentials (no accounts, no users): then
    anyone who reaches it can delete the stream or give it limits that expire history."""
    # nats-py keeps the server's INFO only in a private attribute. Without it the server is
    # taken as open: the side that warns (replicate) and fails (verify) rather than trusts.
    info = getattr(nc, "_server_info", {}) or {}
    return not info.get("auth_required", False)


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
    for name, what in (
        ("max_msgs", "messages"),
        ("max_bytes", "bytes"),
        ("max_msgs_per_subject", "messages per subject"),
    ):
        limit = getattr(config, name)
        if limit is not None and limit > 0:
            discard = getattr(config.discard, "value", config.discard)
            fate = "new records are refused" if discard == "new" else "old records are discarded"
            risks.append(f"{name} is {limit} {what}: beyond it {fate}")
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
