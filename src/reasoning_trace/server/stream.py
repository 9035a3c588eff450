"""``GET /v1/stream``: new decisions as Server-Sent Events, resumable without gaps or repeats.

Each decision is one ``decision`` event whose id is its seq; a client resumes after the last
id it saw with ``Last-Event-ID`` (a browser's ``EventSource`` sends it by itself when it
reconnects; ``retry`` tells it to wait a second). Without it, ``?after=SEQ`` says where to
start (``-1``: from the first record; a client that read a page of decisions resumes after
that page's ``log_size - 1``, so nothing recorded in between is missed); with neither the
stream starts with the next decision. The ``X-Log-Newest`` header says the newest seq when
the stream began, so a client can tell it is catching up. A quiet stream sends a keep-alive
comment every few seconds.

Limits. Each client address holds at most ``streams_per_client`` streams (429 beyond); a slot
is taken only once the request is accepted and freed however the response ends, even when the
client leaves before the first byte. A stream reads at most ``stream_budget`` bytes of
records at a time (the newest lines come from the one ``Broadcaster``, older ones from the
log), and a client that takes nothing for ``stall_seconds`` is cut there; it resumes with
``Last-Event-ID``.

What is FastAPI's and what is not. The response is FastAPI's ``EventSourceResponse``, the
``event``, ``data`` and ``retry`` lines are written by its encoder (``format_sse_event``),
keep-alives are its ``KEEPALIVE_COMMENT``, and ``Last-Event-ID`` is a declared header
parameter. The route does not use FastAPI's generator streaming (a path operation that
``yield``\\s under ``response_class=EventSourceResponse``), for three reasons:

- it encodes every item it is given with ``format_sse_event``, which writes ``id:`` after
  ``data:``; this stream has always sent ``id:`` first, and readers that take each ``data:``
  line with the ``id:`` line before it (``read_events`` in ``tests/test_server.py``) depend
  on that order, so the ``id:`` line is written here, before FastAPI's lines;
- it builds its own ``StreamingResponse`` after the path operation returns and sends through
  a buffered producer task, so no send can be timed: a client that stops reading would hold
  its stream open forever, where ``EventStream`` cuts it after ``stall_seconds``;
- it sends each event as its own write; here a batch of up to ``stream_budget`` bytes is one
  write, which is how a stream that is far behind catches up.

Tests: ``tests/test_server.py``, ``tests/test_hostile_http.py``, ``tests/test_dashboard.py``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import KEEPALIVE_COMMENT, EventSourceResponse, format_sse_event
from starlette.types import Receive, Scope, Send

from ..index_sql import MAX_SEQ
from ..log import DecisionLog
from .broadcast import Broadcaster
from .problems import PROBLEMS, Problem
from .state import served

__all__ = ["EventStream", "Streams", "router"]

logger = logging.getLogger("reasoning_trace")
RETRY = format_sse_event(retry=1000)  # a reconnecting EventSource waits a second
KEEPALIVE_SECONDS = 5.0
_SEQ_TEXT = re.compile(r"[0-9]{1,19}", re.ASCII)


def frame(seq: int, line: bytes) -> bytes:
    """The ``decision`` event of a stored line: ``id:`` first, then FastAPI's lines."""
    return b"id: %d\n" % seq + format_sse_event(event="decision", data_str=line.decode())


class Streams:
    """One app's event streams: the broadcaster they wait on, the slots each client holds."""

    def __init__(self, log: DecisionLog, *, per_client: int, budget: int, stall: float) -> None:
        self.log, self.per_client, self.budget, self.stall = log, per_client, budget, stall
        self.broadcaster = Broadcaster(log)
        self.held: dict[str, int] = {}

    def take(self, client: str) -> None:
        """Take a slot for ``client``; ``Problem`` 429 if it holds all it may."""
        if self.held.get(client, 0) >= self.per_client:
            raise Problem(429, f"at most {self.per_client} streams per client")
        self.held[client] = self.held.get(client, 0) + 1

    def release(self, client: str) -> None:
        """Free a slot ``client`` took."""
        self.held[client] -= 1
        if not self.held[client]:
            del self.held[client]

    def read_batch(self, start: int, stop: int) -> tuple[int, bytes]:
        """Events for seqs start..stop-1 from the log, up to the budget: (last seq, bytes)."""
        out, size, seq = [], 0, start - 1
        records = self.log.read(start, stop)
        try:
            for d in records:
                out.append(frame(d.seq, d.line))
                size, seq = size + len(out[-1]), d.seq
                if size >= self.budget:
                    break
        finally:
            close = getattr(records, "close", None)
            if close is not None:
                close()
        return seq, b"".join(out)

    async def events(self, after: int) -> AsyncIterator[bytes]:
        """The stream's bytes: every decision after seq ``after``, then each new one."""
        # Subscribe first, then send from the log what is not yet sent, then wait for the
        # follower's wake-up: no gaps, no repeats, and never more than a batch in memory.
        broadcaster = self.broadcaster
        grew = broadcaster.subscribe()
        sent = after
        try:
            yield RETRY
            while True:
                newest = broadcaster.newest
                if sent < newest:
                    kept = broadcaster.recent(sent + 1, self.budget)
                    if kept:
                        sent = kept[-1][0]
                        yield b"".join(frame(seq, line) for seq, line in kept)
                        continue
                    seq, chunk = await asyncio.to_thread(self.read_batch, sent + 1, newest + 1)
                    if seq > sent:
                        sent = seq
                        yield chunk
                        continue
                grew.clear()
                if broadcaster.newest > sent:
                    continue
                try:
                    await asyncio.wait_for(grew.wait(), timeout=KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield KEEPALIVE_COMMENT
        finally:
            broadcaster.unsubscribe(grew)


class EventStream(EventSourceResponse):
    """Server-Sent Events that cut a client which stops reading.

    Each chunk must be taken by the client's socket within ``stall`` seconds; otherwise the
    client has fallen behind and the response ends there (it resumes with ``Last-Event-ID``,
    every event's id being its seq). The events' iterator is closed however the response ends.
    """

    def __init__(self, content: AsyncIterator[bytes], *, stall: float, newest: int) -> None:
        super().__init__(
            content,
            headers={
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
                "X-Log-Newest": str(newest),
            },
        )
        self.stall = stall

    async def stream_response(self, send: Send) -> None:
        """Send the head, then each chunk within ``stall`` seconds, else stop there."""
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
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()


async def resume_after(
    request: Request,
    last_event_id: Annotated[
        str | None,
        Header(
            description="Resume after this seq (the id of the last event received)",
            json_schema_extra={"pattern": "^[0-9]{1,19}$"},
        ),
    ] = None,
    after: Annotated[
        int | None,
        Query(
            ge=-1,
            le=MAX_SEQ,
            description="Start after this seq (-1: from the first record) when no "
            "Last-Event-ID is sent; default: with the next decision",
        ),
    ] = None,
) -> int:
    """The seq to stream after: ``Last-Event-ID``, else ``after``, else the newest (400 for
    a bad id)."""
    if last_event_id is None:
        return len(served(request, Streams).log) - 1 if after is None else after
    if not _SEQ_TEXT.fullmatch(last_event_id) or int(last_event_id) > MAX_SEQ:
        raise Problem(
            400, f"Last-Event-ID must be a seq (ASCII digits), not {last_event_id[:24]!r}"
        )
    return int(last_event_id)


async def stream_slot(request: Request) -> AsyncIterator[Streams]:
    """Hold one of the client's stream slots while the response lasts (429 if none is free)."""
    streams = served(request, Streams)
    client = request.client.host if request.client else "?"
    streams.take(client)
    try:
        yield streams
    finally:
        streams.release(client)


router = APIRouter()


@router.get(
    "/v1/stream",
    operation_id="stream",
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "headers": {
                "X-Log-Newest": {
                    "description": "The newest seq when the stream began (-1: none)",
                    "schema": {"type": "string", "pattern": "^-?[0-9]{1,19}$"},
                }
            },
        },
        **PROBLEMS,
    },
)
async def stream(
    after: Annotated[int, Depends(resume_after)],
    streams: Annotated[Streams, Depends(stream_slot)],
) -> EventStream:
    """Server-Sent Events, one ``decision`` event per new decision, id = seq, resumable."""
    newest = max(streams.broadcaster.newest, len(streams.log) - 1)
    return EventStream(streams.events(after), stall=streams.stall, newest=newest)
