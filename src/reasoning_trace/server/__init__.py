"""The HTTP API: a thin ASGI layer over ``DecisionLog`` (install ``reasoning-trace[server]``).

Routes (all JSON unless said)::

    POST /v1/decisions                 record one decision (write role); 201 with the record
    GET  /v1/decisions                 query filters, newest first, ?limit= and ?cursor=
    GET  /v1/decisions/{id or seq}     one record; ?proof=true adds its inclusion proof
    GET  /v1/checkpoint                the newest signed checkpoint (text/plain)
    GET  /v1/proofs/consistency        ?old=&new=
    GET  /v1/stream                    Server-Sent Events, id = seq, resumable (Last-Event-ID)
    GET  /v1/stats                     the stats of ``rtrace stats``, same filters
    GET  /v1/verify                    the last verification's result and when it ran
    GET  /metrics                      Prometheus text: decisions by action and verdict,
                                       append latency, newest checkpoint size and age, verify
    GET  /healthz
    GET  /                             the operator dashboard (static files under /static/)

Every refusal is an RFC 9457 problem (``application/problem+json`` with ``type``, ``title``,
``status`` and a ``detail`` naming what is wrong; ``path`` for a record's field): 422 with the
field path, 409 for a conflicting caller id, 413 for a body over the limit, 415 for a body that
is not ``application/json``, 400 for a bad filter or header, 401/403 for tokens, 429 for too
many streams. Malformed input is never a 500. No route updates or deletes a decision (other
methods get 405). Tokens are given as ``role:token`` pairs (``REASONING_TRACE_TOKENS`` or a
file, one a line); only their SHA-256 is kept, and they are compared in constant time. Without
tokens the server refuses to listen beyond loopback.

Hostile clients. The server answers only the host names it serves (loopback names and the
bound address by default, more with ``allowed_hosts``; ``*`` for any), so a DNS-rebound page
cannot reach it. A state-changing request that a browser marks cross-site (``Sec-Fetch-Site``,
or an ``Origin`` other than the ``Host``) is 403, and writes must be ``application/json``, a
type no page can send cross-site without CORS. A body is read only up to its limit. A decision
body must be I-JSON (RFC 7493): no repeated key, no number beyond 2**53-1 in magnitude, so
every reader reads the same record. An event stream holds at most ``stream_budget`` bytes for
its client; a client that takes nothing for ``stall_seconds`` is cut and resumes with
``Last-Event-ID``.
The ``action`` label of ``/metrics`` keeps the ``metric_actions`` most frequent actions and
counts the rest as ``_other``.
Tests: ``tests/test_server.py`` and ``tests/test_hostile_http.py`` (a real uvicorn on a free
loopback port).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from http import HTTPStatus
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

import anyio
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from .attest import attest
from .checkpoint import Checkpoints
from .errors import ConflictError, NotFound, QueryError, RecordError, RecordTooLarge
from .index import MAX_SEQ
from .log import DecisionLog
from .metrics import counters
from .query import Filter

__all__ = ["Tokens", "app_from_environment", "create_app", "is_loopback"]

ROLES = ("read", "write")
_STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
PROBLEM_JSON = "application/problem+json"
_CLOSE = {"Connection": "close"}  # a refused body is not read on: the connection ends
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SEQ_TEXT = re.compile(r"[0-9]{1,19}", re.ASCII)
_MAX_EXACT_INT = (1 << 53) - 1  # I-JSON (RFC 7493): integers every JSON reader keeps exactly
logger = logging.getLogger("reasoning_trace")


class Tokens:
    """Bearer tokens by role, kept only as SHA-256 digests."""

    def __init__(self, pairs: Iterable[str] = ()) -> None:
        self._digests: list[tuple[str, bytes]] = []
        for pair in pairs:
            role, sep, token = pair.strip().partition(":")
            if not pair.strip():
                continue
            if not sep or role not in ROLES or not token:
                raise ValueError(
                    f"a token must be written role:token with role read or write, "
                    f"not {pair.strip()[:12]!r}..."
                )
            self._digests.append((role, hashlib.sha256(token.encode()).digest()))

    @classmethod
    def from_environment(cls, path: str | None = None) -> Tokens:
        """Tokens from ``$REASONING_TRACE_TOKENS`` (comma-separated) and/or a file."""
        pairs = [p for p in os.environ.get("REASONING_TRACE_TOKENS", "").split(",") if p]
        if path:
            with open(path) as fh:
                pairs += [line for line in fh.read().splitlines() if line.strip()]
        return cls(pairs)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def role(self, token: str) -> str | None:
        """The role of a presented token, or ``None``; every digest is compared (no early exit)."""
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for role, known in self._digests:
            if hmac.compare_digest(digest, known) and (found is None or role == "write"):
                found = role
        return found


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _epoch(when: str) -> float:
    """Unix seconds of a ``datetime_utc`` string."""
    return datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()


def problem(
    status: int, detail: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """An RFC 9457 problem-details response; ``extra`` members (``path``) are added."""
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _host_name(host: str) -> str | None:
    """The name in a ``Host`` header (``[::1]:8080`` -> ``::1``), lower case; None if malformed."""
    host = host.strip().lower()
    if host.startswith("["):
        name, sep, rest = host[1:].partition("]")
        if not sep or (rest and not (rest[0] == ":" and rest[1:].isdigit() and rest[1:].isascii())):
            return None
        return name
    name, sep, port = host.partition(":")
    if sep and not (port.isdigit() and port.isascii()):
        return None
    return name or None


class _Guard:
    """ASGI middleware refusing DNS rebinding and cross-site writes before any route runs.

    ``allowed`` is the set of host names served (None: any). A state-changing method is 403
    when the browser says the request is cross-site (``Sec-Fetch-Site`` other than
    ``same-origin``/``none``) or names an ``Origin`` whose host is not the ``Host`` asked for.
    """

    def __init__(self, app: ASGIApp, allowed: frozenset[str] | None) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> Response | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.allowed is not None:
            name = _host_name(host)
            if name is None or name not in self.allowed:
                return problem(
                    400,
                    f"host {host[:80]!r} is not served here (rtrace serve --allowed-host adds "
                    "a name): a request for another name may be DNS rebinding",
                )
        if scope["method"] in _SAFE_METHODS:
            return None
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return problem(403, f"cross-site request refused (Sec-Fetch-Site: {site[:40]})")
        origin = headers.get("origin")
        if origin is not None:
            try:
                netloc = urlsplit(origin).netloc.lower()
            except ValueError:
                netloc = ""
            if not netloc or netloc != host.strip().lower():
                return problem(403, f"cross-site request refused (Origin: {origin[:80]})")
        return None


class _Ambiguous(ValueError):
    """A request body that JSON readers would read differently (``path`` names where)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


class _Pairs(dict[str, Any]):
    """A decoded JSON object that remembers a key it saw twice."""

    repeated: str | None = None


def _pairs(items: list[tuple[str, Any]]) -> _Pairs:
    obj = _Pairs(items)
    if len(obj) != len(items):
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                obj.repeated = key
                break
            seen.add(key)
    return obj


class _LongInt(str):
    """The digits of an integer too long to convert (kept so the walk can name its path)."""


def _int(text: str) -> int | str:
    return int(text) if len(text) <= 20 else _LongInt(text)


def read_ijson(body: bytes) -> Any:
    """Decode a request body as I-JSON (RFC 7493), refusing what readers disagree on.

    UTF-8 only; no repeated key in an object (readers keep the first or the last); no number
    beyond 2**53-1 in magnitude (JavaScript rounds such integers; 1e400 is Infinity to some).
    Raises ``ValueError`` for a body that is not JSON (or nests too deeply to read) and
    ``_Ambiguous``, naming the path, for one that is JSON but not I-JSON. NaN is left to the
    record's own check, which names the field.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_int=_int)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:  # a walk without recursion: the body may nest as deep as json could read
        path, item = stack.pop()
        if isinstance(item, _Pairs):
            if item.repeated is not None:
                key = f"{path}.{item.repeated}" if path else item.repeated
                raise _Ambiguous(key, f"key {item.repeated!r} appears twice in one object")
            stack.extend((f"{path}.{k}" if path else k, v) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(item))
        elif isinstance(item, _LongInt) or (
            isinstance(item, int | float)
            and not isinstance(item, bool)
            and item == item  # NaN is left to the record's check, which names it
            and abs(item) > _MAX_EXACT_INT
        ):
            raise _Ambiguous(
                path, f"number {str(item)[:24]} is beyond 2**53-1: some JSON readers round it"
            )
    return value


class _Broadcaster:
    """One follower thread per process, telling every event stream that the log grew.

    Subscribers get only a wake-up (an ``asyncio.Event``), never a queue of records. The
    newest records' lines are kept once, for all streams, up to ``keep_bytes``; a stream
    that needs older ones reads them from the log itself, a bounded batch at a time. So
    memory grows neither with the number of streams nor with how far behind they are.
    """

    def __init__(self, log: DecisionLog, keep_bytes: int = 4 << 20) -> None:
        self.log = log
        self.newest = len(log) - 1
        self.keep_bytes = keep_bytes
        self._recent: deque[tuple[int, bytes]] = deque()
        self._recent_bytes = 0
        self._events: set[asyncio.Event] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        threading.Thread(target=self._run, name="rtrace-broadcast", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        assert self._loop is not None
        for d in self.log.follow(after_seq=self.newest, stop=self._stop.is_set):
            self._loop.call_soon_threadsafe(self._dispatch, d.seq, d.line)

    def _dispatch(self, seq: int, line: bytes) -> None:
        if self._recent and self._recent[-1][0] != seq - 1:
            self._recent.clear()  # keep only a run of consecutive seqs
            self._recent_bytes = 0
        self._recent.append((seq, line))
        self._recent_bytes += len(line)
        while self._recent_bytes > self.keep_bytes and len(self._recent) > 1:
            self._recent_bytes -= len(self._recent.popleft()[1])
        self.newest = max(self.newest, seq)
        for event in self._events:
            event.set()

    def recent(self, start: int, budget: int) -> list[tuple[int, bytes]]:
        """Kept lines from seq ``start`` on, up to ``budget`` bytes; [] if ``start`` is not kept."""
        if not self._recent or not self._recent[0][0] <= start <= self._recent[-1][0]:
            return []
        out, size = [], 0
        for i in range(start - self._recent[0][0], len(self._recent)):
            out.append(self._recent[i])
            size += len(self._recent[i][1])
            if size >= budget:
                break
        return out

    def subscribe(self) -> asyncio.Event:
        event = asyncio.Event()
        self._events.add(event)
        return event

    def unsubscribe(self, event: asyncio.Event) -> None:
        self._events.discard(event)


class _EventStream(StreamingResponse):
    """Server-Sent Events that cut a client which stops reading, and always free its slot.

    Each chunk must be taken by the client's socket within ``stall`` seconds; otherwise the
    client has fallen behind and the response ends there (it resumes with ``Last-Event-ID``,
    every event's id being its seq). ``release`` runs however the response ends, even when
    the client leaves before the first byte.
    """

    def __init__(
        self, content: AsyncIterator[bytes], *, stall: float, release: Callable[[], None]
    ) -> None:
        super().__init__(
            content, media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )
        self.stall, self.release = stall, release

    async def stream_response(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async for chunk in self.body_iterator:
            body = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
            with anyio.move_on_after(self.stall) as waited:
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if waited.cancelled_caught:
                logger.warning("cut an event stream: its client took nothing for %ss", self.stall)
                return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()


class _Verifier:
    """Runs ``verify`` in the background every ``every`` seconds; keeps the last result."""

    def __init__(self, log: DecisionLog, every: float) -> None:
        self.log, self.every = log, every
        self.result: dict[str, Any] = {"status": "not yet run"}
        self.ok: bool | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtrace-verify", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        from .verify import verify

        while True:
            started = time.time()
            report = verify(self.log.root)
            self.ok = report.ok
            self.result = {
                "status": "ok" if report.ok else "failed",
                "ok": report.ok,
                "ran_at": started,
                "seconds": round(time.time() - started, 3),
                "records": report.records,
                "signed_size": report.signed_size,
                "checkpoints": report.checkpoints,
                "failures": len(report.failures),
                "findings": [f.to_json() for f in report.findings[:50]],
            }
            if self._stop.wait(self.every):
                return


_PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "path": {"type": "string"},
    },
}
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {
        "description": "A problem (RFC 9457) naming what is wrong",
        "content": {PROBLEM_JSON: {"schema": _PROBLEM_SCHEMA}},
    }
    for code in ("4XX", 422)
}
_LINKS = {
    "GetDecisionById": {
        "operationId": "get_decision",
        "parameters": {"key": "$response.body#/id"},
    },
    "GetDecisionBySeq": {
        "operationId": "get_decision",
        "parameters": {"key": "$response.body#/seq"},
    },
}
# A query's time as the schema says it: a span back from now, or an ISO 8601 date or date-time
# of years 1000 to 8999 (days 1-28 in the pattern, which any month has; the server reads more).
TIME_PATTERN = (
    r"^([0-9]{1,5}(\.[0-9]{1,3})?[smhdw]"
    r"|[1-8][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
    r"(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])?)?)$"
)
_JSON_VALUE = {"$ref": "#/components/schemas/IJsonValue"}
_IJSON_VALUE = {  # any I-JSON value: numbers within +-(2**53-1), nested to any depth
    "description": "Any JSON value; numbers within +-(2**53-1) (I-JSON, RFC 7493)",
    "anyOf": [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "string"},
        {"type": "number", "minimum": -_MAX_EXACT_INT, "maximum": _MAX_EXACT_INT},
        {"type": "array", "items": _JSON_VALUE},
        {"type": "object", "additionalProperties": _JSON_VALUE},
    ],
}
_DECISION_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["action", "approved"],
                "additionalProperties": False,
                "properties": {
                    "action": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 128,
                        "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]+$",
                    },
                    "approved": {"type": "boolean"},
                    "votes": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "properties": {
                                "passed": {"type": "boolean"},
                                "reason": {"type": "string"},
                            },
                            "additionalProperties": _JSON_VALUE,
                        },
                    },
                    "subject": {"type": "object", "additionalProperties": _JSON_VALUE},
                    "reason": {"type": "string"},
                    "id": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
                },
            }
        }
    },
}


def _bounded_actions(actions: Iterable[Any], keep: int) -> list[tuple[str, int, int]]:
    """(action, total, approved) for the ``keep`` most frequent actions, the rest as _other.

    Any writer chooses action names; a label per name would let it grow /metrics without end.
    """
    ranked = sorted(actions, key=lambda a: (-a.total, a.action))
    out = [(a.action, a.total, a.approved) for a in ranked[:keep]]
    rest = ranked[keep:]
    if rest:
        out.append(("_other", sum(a.total for a in rest), sum(a.approved for a in rest)))
    return out


def create_app(
    log: DecisionLog,
    tokens: Tokens | None = None,
    *,
    verify_every: float = 600.0,
    streams_per_client: int = 8,
    allowed_hosts: Iterable[str] = (),
    stream_budget: int = 256 * 1024,
    stall_seconds: float = 30.0,
    metric_actions: int = 50,
) -> FastAPI:
    """The ASGI app serving ``log``. With ``tokens``, every route but /healthz needs one.

    A background thread verifies the log every ``verify_every`` seconds (0: never); each
    client address may hold ``streams_per_client`` event streams at once. The app answers
    the loopback names and ``allowed_hosts`` (``*``: any host). An event stream reads at most
    ``stream_budget`` bytes of records at a time and cuts a client that takes nothing for
    ``stall_seconds``. ``/metrics`` labels at most ``metric_actions`` actions.
    """
    from prometheus_client import CollectorRegistry, Histogram, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    tokens = tokens or Tokens()
    checker = _Verifier(log, verify_every)
    broadcaster = _Broadcaster(log)
    streams: dict[str, int] = {}
    registry = CollectorRegistry()
    latency = Histogram(
        "rtrace_append_seconds",
        "Time to record one decision durably",
        registry=registry,
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
    )

    class LogCollector:
        """Decision counts (from the index, cached 10 s), checkpoint and verify gauges."""

        cached: tuple[float, list[tuple[str, int, int]]] = (0.0, [])

        def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
            now = time.time()
            if now - self.cached[0] > 10:
                self.cached = (
                    now,
                    _bounded_actions(log.stats(approximate=True).actions, metric_actions),
                )
            decisions = GaugeMetricFamily(
                "rtrace_decisions", "Decisions in the log", labels=["action", "verdict"]
            )
            for action, total, approved in self.cached[1]:
                decisions.add_metric([action, "approved"], approved)
                decisions.add_metric([action, "rejected"], total - approved)
            yield decisions
            latest = Checkpoints(log.root).latest()
            size = GaugeMetricFamily(
                "rtrace_checkpoint_size", "Records the newest checkpoint covers"
            )
            size.add_metric([], latest.size if latest else 0)
            yield size
            age = GaugeMetricFamily("rtrace_checkpoint_age_seconds", "Age of the newest checkpoint")
            age.add_metric([], now - _epoch(latest.datetime_utc) if latest else float("nan"))
            yield age
            status = GaugeMetricFamily(
                "rtrace_verify_ok",
                "1 if the last verify passed, 0 if it failed, -1 if it has not run",
            )
            status.add_metric([], -1 if checker.ok is None else int(checker.ok))
            yield status
            # What this process saw go wrong without failing loudly (reasoning_trace.metrics):
            # clock steps, checkpoints that could not be written, decisions not stored.
            events = CounterMetricFamily(
                "rtrace_events", "Events counted by this server process", labels=["event"]
            )
            for name, value in sorted(counters().items()):
                if not name.endswith("_seconds"):
                    events.add_metric([name], value)
            yield events
            largest = GaugeMetricFamily(
                "rtrace_clock_step_back_seconds", "The largest clock step back seen"
            )
            largest.add_metric([], counters().get("clock_step_back_seconds", 0.0))
            yield largest

    registry.register(LogCollector())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        broadcaster.start(asyncio.get_running_loop())
        if verify_every > 0:
            checker.start()
        yield
        checker.stop()
        broadcaster.stop()

    app = FastAPI(title="reasoning-trace", version="1", description=__doc__, lifespan=lifespan)
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        schema = plain_openapi()  # built once and cached by FastAPI; add the shared value type
        schema.setdefault("components", {}).setdefault("schemas", {})["IJsonValue"] = _IJSON_VALUE
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    hosts = {h.strip().lower().strip("[]") for h in allowed_hosts if h.strip()}
    app.add_middleware(
        _Guard,
        allowed=None if "*" in hosts else frozenset(hosts | set(LOOPBACK_NAMES)),
    )

    def need(role: str) -> Any:
        def check(request: Request) -> None:
            if not tokens:
                return
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                # Browsers cannot put headers on an EventSource: reads may pass the token in
                # the query string instead (writes may not).
                token = request.query_params.get("access_token", "") if role == "read" else ""
            if not token:
                raise HTTPException(
                    401, "a bearer token is needed", headers={"WWW-Authenticate": "Bearer"}
                )
            granted = tokens.role(token)
            if granted is None:
                raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
            if role == "write" and granted != "write":
                raise HTTPException(403, "this token may only read")

        return Depends(check)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method the path has, not only its first route's
            methods: set[str] = set()
            for route in app.router.routes:
                if route.matches(request.scope)[0] != Match.NONE:
                    methods |= getattr(route, "methods", None) or set()
            headers["Allow"] = ", ".join(sorted(methods))
        return problem(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = []
        for error in exc.errors()[:5]:
            where = ".".join(str(part) for part in error.get("loc", ()))
            reasons.append(f"{where}: {str(error.get('msg', 'invalid'))[:120]}")
        return problem(422, "; ".join(reasons) or "invalid request")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return problem(500, "internal error (logged by the server)")

    def filters(
        # The patterns document what is read; the filter's own parser checks and names errors.
        since: str | None = Query(default=None, json_schema_extra={"pattern": TIME_PATTERN}),
        until: str | None = Query(default=None, json_schema_extra={"pattern": TIME_PATTERN}),
        action: str | None = None,
        approved: bool | None = None,
        voter: str | None = None,
        subject: list[str] = Query(  # noqa: B008 -- FastAPI's way to declare it
            default=[], json_schema_extra={"items": {"type": "string", "pattern": "^[^=]+="}}
        ),
    ) -> Filter:
        """The query filters of ``rtrace query``, shared by the routes that take them."""
        try:
            return Filter.from_text(
                since=since,
                until=until,
                action=action,
                approved=approved,
                voter=voter,
                subject=subject,
            )
        except QueryError as exc:
            raise HTTPException(400, str(exc)) from exc

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> str:
        return (files(__package__) / "dashboard" / "index.html").read_text()

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name == "plotly.min.js":  # the chart library, from the installed plotly package
            data = (files("plotly") / "package_data" / "plotly.min.js").read_bytes()
        elif name in _STATIC:
            data = (files(__package__) / "dashboard" / name).read_bytes()
        else:
            raise HTTPException(404, f"no static file {name!r}")
        return Response(
            data,
            media_type=_STATIC.get(name, "text/javascript"),
            headers={"Cache-Control": "max-age=3600"},
        )

    @app.get("/healthz", operation_id="healthz", responses=_PROBLEMS)
    def healthz() -> dict[str, Any]:
        return {"ok": True, "records": len(log)}

    body_limit = 2 * log.max_line_bytes  # escapes (\\u00e9) may make a body longer than its line

    @app.post(
        "/v1/decisions",
        status_code=201,
        dependencies=[need("write")],
        operation_id="record_decision",
        responses={201: {"description": "The stored record", "links": _LINKS}, **_PROBLEMS},
        openapi_extra={"requestBody": _DECISION_BODY},
    )
    async def post_decision(request: Request) -> Response:
        media, _, params = request.headers.get("content-type", "").partition(";")
        charset = params.strip().lower().removeprefix("charset=").strip('"')
        if media.strip().lower() != "application/json" or charset not in ("", "utf-8"):
            return problem(415, "the body must be application/json (UTF-8)", headers=_CLOSE)
        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > body_limit:
            return problem(
                413, f"body of {declared} bytes is over the limit of {body_limit}", headers=_CLOSE
            )
        chunks, size = [], 0
        async for chunk in request.stream():  # the limit holds while reading, chunked or not
            size += len(chunk)
            if size > body_limit:
                return problem(413, f"body is over the limit of {body_limit} bytes", headers=_CLOSE)
            chunks.append(chunk)
        try:
            obj = read_ijson(b"".join(chunks))
        except _Ambiguous as exc:
            return problem(422, f"{exc.path}: {exc}", path=exc.path)
        except ValueError as exc:
            return problem(400, f"body is not JSON: {exc}")
        if not isinstance(obj, dict):
            return problem(422, "the body must be a JSON object", path="")
        unknown = set(obj) - {"action", "approved", "votes", "subject", "reason", "id"}
        if unknown:
            first = sorted(unknown)[0]
            return problem(422, f"unknown fields: {', '.join(sorted(unknown))}", path=first)
        for name in ("action", "approved"):
            if name not in obj:
                return problem(422, f"{name}: required", path=name)
        if "id" in obj and not isinstance(obj["id"], str):
            return problem(422, "id: must be a string when given", path="id")
        try:
            with latency.time():
                d = await asyncio.to_thread(
                    log.record,
                    obj["action"],
                    obj["approved"],
                    obj.get("votes", {}),
                    obj.get("subject", {}),
                    obj.get("reason", ""),
                    id=obj.get("id"),
                )
        except RecordTooLarge as exc:
            return problem(413, str(exc), path=exc.path)
        except RecordError as exc:
            return problem(422, str(exc), path=exc.path)
        except ConflictError as exc:
            return problem(409, str(exc), stored=exc.stored.to_dict())
        return Response(d.line, status_code=201, media_type="application/json")

    @app.get(
        "/v1/decisions",
        dependencies=[need("read")],
        operation_id="list_decisions",
        responses=_PROBLEMS,
    )
    def list_decisions(
        flt: Filter = Depends(filters),  # noqa: B008 -- FastAPI's way to declare it
        limit: int = Query(default=50, ge=1, le=1000),
        cursor: int | None = Query(default=None, ge=0, le=MAX_SEQ),
    ) -> Response:
        page = log.query(flt, limit=limit + 1, newest_first=True, before_seq=cursor)
        more = len(page) > limit
        page = page[:limit]
        # The stored lines are JSON already: splice them in rather than re-encode each record.
        body = b'{"decisions":[' + b",".join(d.line for d in page) + b'],"next_cursor":'
        body += str(page[-1].seq).encode() if more else b"null"
        return Response(body + b"}", media_type="application/json")

    @app.get(
        "/v1/decisions/{key}",
        dependencies=[need("read")],
        operation_id="get_decision",
        responses=_PROBLEMS,
    )
    def get_decision(key: str, proof: bool = False) -> dict[str, Any]:
        try:
            d = log.get(key)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        out: dict[str, Any] = {"decision": d.to_dict()}
        # "signed" only for a leaf proven in a checkpoint whose signature verified (SPEC 4a).
        out["signed"] = attest(log, d).to_json()
        if proof:  # reading never signs: null until a checkpoint covers the decision
            try:
                out["proof"] = log.prove(d.seq).to_json()
            except NotFound:
                out["proof"] = None
        return out

    @app.get(
        "/v1/checkpoint",
        response_class=PlainTextResponse,
        dependencies=[need("read")],
        operation_id="checkpoint",
        responses=_PROBLEMS,
    )
    def checkpoint() -> str:
        note = Checkpoints(log.root).newest_note()
        if note is None:
            raise HTTPException(404, "no checkpoint signed yet")
        return note

    @app.get(
        "/v1/proofs/consistency",
        dependencies=[need("read")],
        operation_id="consistency_proof",
        responses=_PROBLEMS,
    )
    def consistency(
        old: int = Query(ge=1, le=MAX_SEQ), new: int | None = Query(default=None, ge=1, le=MAX_SEQ)
    ) -> dict[str, Any]:
        try:
            return log.consistency(old, new).to_json()
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc

    @app.get("/v1/stats", dependencies=[need("read")], operation_id="stats", responses=_PROBLEMS)
    def stats(
        flt: Filter = Depends(filters),  # noqa: B008 -- FastAPI's way to declare it
    ) -> dict[str, Any]:
        return log.stats(flt).to_json()

    @app.get(
        "/v1/verify", dependencies=[need("read")], operation_id="last_verify", responses=_PROBLEMS
    )
    def last_verify() -> dict[str, Any]:
        return checker.result

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        dependencies=[need("read")],
        operation_id="metrics",
        responses=_PROBLEMS,
    )
    def metrics() -> str:
        return str(generate_latest(registry).decode())

    def release(client: str) -> None:
        streams[client] -= 1
        if not streams[client]:
            del streams[client]

    @app.get(
        "/v1/stream",
        dependencies=[need("read")],
        operation_id="stream",
        responses={
            200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}},
            **_PROBLEMS,
        },
    )
    async def stream(request: Request) -> Response:
        # Everything that can refuse runs before a slot is taken; the response frees it.
        last = request.headers.get("last-event-id")
        if last is not None and (not _SEQ_TEXT.fullmatch(last) or int(last) > MAX_SEQ):
            return problem(400, f"Last-Event-ID must be a seq (ASCII digits), not {last[:24]!r}")
        after = int(last) if last is not None else len(log) - 1
        client = request.client.host if request.client else "?"
        if streams.get(client, 0) >= streams_per_client:
            return problem(429, f"at most {streams_per_client} streams per client")

        def read_batch(start: int, stop: int) -> tuple[int, bytes]:
            """Events for seqs start..stop-1, up to the byte budget: (last seq, bytes)."""
            out, size, seq = [], 0, start - 1
            records = log.read(start, stop)
            try:
                for d in records:
                    out.append(b"id: %d\nevent: decision\ndata: %s\n\n" % (d.seq, d.line))
                    size, seq = size + len(out[-1]), d.seq
                    if size >= stream_budget:
                        break
            finally:
                close = getattr(records, "close", None)
                if close is not None:
                    close()
            return seq, b"".join(out)

        async def events() -> AsyncIterator[bytes]:
            # Register first, then send from the log what is not yet sent, then wait for the
            # follower's wake-up: no gaps, no repeats, and never more than a batch in memory.
            grew = broadcaster.subscribe()
            sent = after
            try:
                yield b"retry: 1000\n\n"
                while True:
                    newest = broadcaster.newest
                    if sent < newest:
                        kept = broadcaster.recent(sent + 1, stream_budget)
                        if kept:
                            sent = kept[-1][0]
                            yield b"".join(
                                b"id: %d\nevent: decision\ndata: %s\n\n" % item for item in kept
                            )
                            continue
                        seq, chunk = await asyncio.to_thread(read_batch, sent + 1, newest + 1)
                        if seq > sent:
                            sent = seq
                            yield chunk
                            continue
                    grew.clear()
                    if broadcaster.newest > sent:
                        continue
                    try:
                        await asyncio.wait_for(grew.wait(), timeout=5)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
            finally:
                broadcaster.unsubscribe(grew)

        streams[client] = streams.get(client, 0) + 1
        return _EventStream(events(), stall=stall_seconds, release=lambda: release(client))

    return app


def app_from_environment() -> FastAPI:
    """The app for one of several uvicorn worker processes (``rtrace serve --workers N``).

    Each worker opens the log itself (``$REASONING_TRACE_DIR``); the log's file lock makes
    several writing processes safe, and each keeps its own group commit.
    """
    return create_app(
        DecisionLog(os.environ.get("REASONING_TRACE_DIR")),
        Tokens.from_environment(os.environ.get("REASONING_TRACE_TOKEN_FILE") or None),
        streams_per_client=int(os.environ.get("REASONING_TRACE_STREAMS_PER_CLIENT", "8")),
        allowed_hosts=os.environ.get("REASONING_TRACE_ALLOWED_HOSTS", "").split(","),
    )
