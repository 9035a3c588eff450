"""The HTTP API: a thin ASGI layer over ``DecisionLog`` (install ``reasoning-trace[server]``).

Routes (all JSON unless said)::

    POST /v1/decisions                 record one decision (write role); 201 with the record
    GET  /v1/decisions                 query filters, newest first, ?limit= and ?cursor=
    GET  /v1/decisions/{id or seq}     one record; ?proof=true adds its inclusion proof
    GET  /v1/checkpoint                the newest signed checkpoint (text/plain)
    GET  /v1/checkpoint/witnessed      ?quorum=K: the newest one K of its witnesses cosigned
    GET  /v1/proofs/consistency        ?old=&new=
    GET  /v1/stream                    Server-Sent Events, id = seq, resumable (Last-Event-ID,
                                       or ?after=); X-Log-Newest says how far the log reaches
    GET  /v1/stats                     the stats of ``rtrace stats``, same filters
    GET  /v1/verify                    the last verification: what it covered, when it ran,
                                       when the last full pass ran, its findings
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

This package's front holds ``create_app`` and ``app_from_environment``; each concept has its
module: ``auth`` (tokens, host and cross-site checks), ``problems`` (refusals), ``body``
(reading a request body), ``routes_write`` and ``routes_read``, ``public`` (the dashboard,
``/healthz``), ``stream`` and ``broadcast`` (Server-Sent Events), ``metrics`` and ``audit``
(``GET /v1/verify`` over the library's ``verify_watch.Watch``: incremental checks, full passes,
one verifying process however many serve the log).
Tests: ``tests/test_server.py`` and ``tests/test_hostile_http.py`` (a real uvicorn on a free
loopback port), ``tests/test_dashboard.py``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from ..log import DecisionLog
from ..verify_watch import Watch
from . import audit, auth, metrics, problems, public, routes_read, routes_write, state, stream
from .auth import Tokens, is_loopback
from .witnessed import router as witnessed_router

__all__ = ["Tokens", "app_from_environment", "create_app", "is_loopback"]


def create_app(
    log: DecisionLog,
    tokens: Tokens | None = None,
    *,
    verify_every: float = 5.0,
    full_verify_every: float = 600.0,
    streams_per_client: int = 8,
    allowed_hosts: Iterable[str] = (),
    stream_budget: int = 256 * 1024,
    stall_seconds: float = 30.0,
    metric_actions: int = 50,
) -> FastAPI:
    """The ASGI app serving ``log``. With ``tokens``, every route but /healthz needs one.

    A background thread checks the log every ``verify_every`` seconds (0: never): what is new
    since the last verified checkpoint, and all of it every ``full_verify_every`` seconds, in
    one process of all those serving the log (``verify_watch.Watch``); each client address may
    hold ``streams_per_client`` event streams at once. The app answers
    the loopback names and ``allowed_hosts`` (``*``: any host). An event stream reads at most
    ``stream_budget`` bytes of records at a time and cuts a client that takes nothing for
    ``stall_seconds``. ``/metrics`` labels at most ``metric_actions`` actions.
    """
    tokens = tokens or Tokens()
    checker = Watch(log.root, every=verify_every, full_every=full_verify_every, writing=True)
    streams = stream.Streams(
        log, per_client=streams_per_client, budget=stream_budget, stall=stall_seconds
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Follow the log and audit it while the app serves."""
        streams.broadcaster.start(asyncio.get_running_loop())
        checker.start()
        yield
        checker.stop()
        streams.broadcaster.stop()

    app = FastAPI(title="reasoning-trace", version="1", description=__doc__, lifespan=lifespan)
    state.keep(app, log, checker, streams, metrics.ServerMetrics(log, checker, metric_actions))
    problems.add_handlers(app)
    # Without tokens every route is open, and the OpenAPI document names no security scheme.
    access = auth.Access(tokens)
    reader = [Depends(access.read)] if tokens else []
    app.include_router(public.router)
    app.include_router(routes_write.router, dependencies=[Depends(access.write)] if tokens else [])
    for router in (routes_read.router, audit.router, metrics.router, stream.router):
        app.include_router(router, dependencies=reader)
    app.include_router(witnessed_router, dependencies=reader)  # the witnesses' checkpoint

    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's document, with the schemas of the decision request's types."""
        schema = plain_openapi()  # built once and cached by FastAPI; add the request's types
        schema.setdefault("components", {}).setdefault("schemas", {}).update(routes_write.SCHEMAS)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    hosts = {h.strip().lower().strip("[]") for h in allowed_hosts if h.strip()}
    app.add_middleware(
        auth.SiteGuard,
        allowed=None if "*" in hosts else frozenset(hosts | set(auth.LOOPBACK_NAMES)),
    )
    return app


def app_from_environment() -> FastAPI:
    """The app for one of several uvicorn worker processes (``rtrace serve --workers N``).

    Each worker opens the log itself (``$REASONING_TRACE_DIR``); the log's file lock makes
    several writing processes safe, and each keeps its own group commit. One of them verifies
    (``verify_watch``), every ``$REASONING_TRACE_VERIFY_SECONDS`` (default 5) and in full every
    ``$REASONING_TRACE_FULL_VERIFY_SECONDS`` (default 600).
    """
    return create_app(
        DecisionLog(os.environ.get("REASONING_TRACE_DIR")),
        Tokens.from_environment(os.environ.get("REASONING_TRACE_TOKEN_FILE") or None),
        verify_every=float(os.environ.get("REASONING_TRACE_VERIFY_SECONDS", "5")),
        full_verify_every=float(os.environ.get("REASONING_TRACE_FULL_VERIFY_SECONDS", "600")),
        streams_per_client=int(os.environ.get("REASONING_TRACE_STREAMS_PER_CLIENT", "8")),
        allowed_hosts=os.environ.get("REASONING_TRACE_ALLOWED_HOSTS", "").split(","),
    )
