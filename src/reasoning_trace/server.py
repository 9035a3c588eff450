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

Refusals name the problem: 422 with the field path, 409 for a conflicting caller id, 413 for a
body over the record limit, 400 for a bad filter, 401/403 for tokens. No route updates or
deletes a decision (other methods get 405). Tokens are given as ``role:token`` pairs
(``REASONING_TRACE_TOKENS`` or a file, one a line); only their SHA-256 is kept, and they are
compared in constant time. Without tokens the server refuses to listen beyond loopback.
Tests: ``tests/test_server.py`` (a real uvicorn on a free loopback port).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from importlib.resources import files
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)

from .checkpoint import Checkpoints
from .errors import ConflictError, NotFound, QueryError, RecordError, RecordTooLarge
from .index import MAX_SEQ
from .log import DecisionLog
from .query import Filter
from .record import Decision

__all__ = ["Tokens", "app_from_environment", "create_app", "is_loopback"]

ROLES = ("read", "write")
_STATIC = {"app.js": "text/javascript", "style.css": "text/css"}


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


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


class _Broadcaster:
    """One follower thread per process, fanning decisions out to every event stream.

    Each subscriber gets a bounded queue; one that falls behind is sent ``None`` and catches up
    from the log instead, so a slow client never holds others up or grows memory.
    """

    def __init__(self, log: DecisionLog) -> None:
        self.log = log
        self.newest = len(log) - 1
        self._queues: set[asyncio.Queue[Decision | None]] = set()
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
            self._loop.call_soon_threadsafe(self._dispatch, d)

    def _dispatch(self, d: Decision) -> None:
        self.newest = max(self.newest, d.seq)
        for queue in self._queues:
            try:
                queue.put_nowait(d)
            except asyncio.QueueFull:
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)

    def subscribe(self) -> asyncio.Queue[Decision | None]:
        queue: asyncio.Queue[Decision | None] = asyncio.Queue(maxsize=1000)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Decision | None]) -> None:
        self._queues.discard(queue)


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


def create_app(
    log: DecisionLog,
    tokens: Tokens | None = None,
    *,
    verify_every: float = 600.0,
    streams_per_client: int = 8,
) -> FastAPI:
    """The ASGI app serving ``log``. With ``tokens``, every route but /healthz needs one.

    A background thread verifies the log every ``verify_every`` seconds (0: never); each
    client address may hold ``streams_per_client`` event streams at once.
    """
    from prometheus_client import CollectorRegistry, Histogram, generate_latest
    from prometheus_client.core import GaugeMetricFamily

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

        def collect(self) -> Iterator[GaugeMetricFamily]:
            now = time.time()
            if now - self.cached[0] > 10:
                self.cached = (now, [(a.action, a.total, a.approved) for a in log.stats().actions])
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

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    def filters(
        since: str | None = None,
        until: str | None = None,
        action: str | None = None,
        approved: bool | None = None,
        voter: str | None = None,
        subject: list[str] = Query(default=[]),  # noqa: B008 -- FastAPI's way to declare it
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

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "records": len(log)}

    @app.post("/v1/decisions", status_code=201, dependencies=[need("write")])
    async def post_decision(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > log.max_line_bytes:  # refuse before reading
            return _error(
                413, f"body of {declared} bytes is over the record limit of {log.max_line_bytes}"
            )
        body = await request.body()
        if len(body) > log.max_line_bytes:
            return _error(
                413, f"body of {len(body)} bytes is over the record limit of {log.max_line_bytes}"
            )
        try:
            obj = json.loads(body)
        except ValueError as exc:
            return _error(400, f"body is not JSON: {exc}")
        if not isinstance(obj, dict):
            return _error(422, "the body must be a JSON object", path="")
        unknown = set(obj) - {"action", "approved", "votes", "subject", "reason", "id"}
        if unknown:
            return _error(
                422, f"unknown fields: {', '.join(sorted(unknown))}", path=sorted(unknown)[0]
            )
        for name in ("action", "approved"):
            if name not in obj:
                return _error(422, f"{name}: required", path=name)
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
            return _error(413, str(exc))
        except RecordError as exc:
            return _error(422, str(exc), path=exc.path)
        except ConflictError as exc:
            return _error(409, str(exc), stored=exc.stored.to_dict())
        return Response(d.line, status_code=201, media_type="application/json")

    @app.get("/v1/decisions", dependencies=[need("read")])
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

    @app.get("/v1/decisions/{key}", dependencies=[need("read")])
    def get_decision(key: str, proof: bool = False) -> dict[str, Any]:
        try:
            d = log.get(key)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        out: dict[str, Any] = {"decision": d.to_dict()}
        if proof:  # reading never signs: null until a checkpoint covers the decision
            try:
                out["proof"] = log.prove(d.seq).to_json()
            except NotFound:
                out["proof"] = None
        return out

    @app.get("/v1/checkpoint", response_class=PlainTextResponse, dependencies=[need("read")])
    def checkpoint() -> str:
        note = log.root / "checkpoint"
        if not note.exists():
            raise HTTPException(404, "no checkpoint signed yet")
        return note.read_text()

    @app.get("/v1/proofs/consistency", dependencies=[need("read")])
    def consistency(
        old: int = Query(ge=1), new: int | None = Query(default=None, ge=1)
    ) -> dict[str, Any]:
        try:
            return log.consistency(old, new).to_json()
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc

    @app.get("/v1/stats", dependencies=[need("read")])
    def stats(
        flt: Filter = Depends(filters),  # noqa: B008 -- FastAPI's way to declare it
    ) -> dict[str, Any]:
        return log.stats(flt).to_json()

    @app.get("/v1/verify", dependencies=[need("read")])
    def last_verify() -> dict[str, Any]:
        return checker.result

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=[need("read")])
    def metrics() -> str:
        return str(generate_latest(registry).decode())

    @app.get("/v1/stream", dependencies=[need("read")])
    async def stream(request: Request) -> StreamingResponse:
        last = request.headers.get("last-event-id")
        if last is not None and not last.isdigit():
            raise HTTPException(400, "Last-Event-ID must be a seq")
        client = request.client.host if request.client else "?"
        if streams.get(client, 0) >= streams_per_client:
            raise HTTPException(429, f"at most {streams_per_client} streams per client")
        streams[client] = streams.get(client, 0) + 1
        after = int(last) if last is not None else len(log) - 1

        def read_range(start: int, stop: int) -> list[Decision]:
            return list(log.read(start, stop))

        async def events() -> AsyncIterator[bytes]:
            # One follower per process broadcasts to every subscriber's queue. A subscriber
            # registers first, then replays what it missed from the log, then takes the live
            # queue, skipping seqs it already sent: no gaps, no repeats.
            queue = broadcaster.subscribe()
            sent = after
            try:
                yield b"retry: 1000\n\n"
                while True:
                    newest = broadcaster.newest
                    if sent < newest:
                        start, stop = sent + 1, min(newest, sent + 500) + 1
                        backlog = await asyncio.to_thread(read_range, start, stop)
                        for d in backlog:
                            yield b"id: %d\nevent: decision\ndata: %s\n\n" % (d.seq, d.line)
                            sent = d.seq
                        if backlog:
                            continue
                    try:
                        item = await asyncio.wait_for(queue.get(), timeout=5)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    if item is not None and item.seq == sent + 1:
                        yield b"id: %d\nevent: decision\ndata: %s\n\n" % (item.seq, item.line)
                        sent = item.seq
                    # None (fell behind) or a seq not next in line: the backlog path catches up
            finally:
                broadcaster.unsubscribe(queue)
                streams[client] -= 1

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

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
    )
