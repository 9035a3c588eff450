"""``TCP_NODELAY`` on every connection ``rtrace serve`` accepts, whatever runs it.

Why: a response is written in more than one piece (headers, then body). With Nagle's
algorithm on, the kernel holds the second piece until the client acknowledges the first, and
the client delays that acknowledgement (Linux: 40 ms). Every keep-alive request after the first
then waits ~44 ms, which capped ``POST /v1/decisions`` at ~640/s over 32 connections.

Who sets it today, measured with uvicorn 0.54 on Linux:

- asyncio turns it on only for a socket whose ``proto`` is ``IPPROTO_TCP``. A listener built
  from ``getaddrinfo`` (uvicorn with one process) has that; the socket uvicorn's supervisor
  binds for ``--workers N`` is made with ``proto`` 0, and so is every connection it accepts:
  Nagle stays on (uvicorn issue #3149).
- uvloop turns it on for every TCP connection, but ``[server]`` did not install it, and
  ``--loop asyncio`` or a platform without uvloop is back to asyncio.

So the HTTP protocol that uvicorn builds for each connection turns it on itself: one
``setsockopt`` a connection, on the loop uvicorn picked, with the HTTP parser it picked
(httptools when installed, else h11), in one process or many. ``rtrace serve`` hands it to
``uvicorn.run`` as ``http=``.

Not the listening socket: Linux does copy ``TCP_NODELAY`` from a listener to the sockets it
accepts, but ``uvicorn.run`` binds the ``--workers`` socket itself. Binding our own would mean
driving uvicorn's supervisor (``uvicorn.supervisors.Multiprocess``, whose signature has
changed between releases), and ``uvicorn.run(fd=...)`` labels the socket ``AF_UNIX``, which
asyncio and uvloop then treat as a Unix socket.

Tests: ``tests/test_serve_nodelay.py`` (a real ``rtrace serve`` with 1 and 2 processes, with
and without uvloop and httptools; the server's own socket read with ``getsockopt``).
Benchmark: ``bench/bench_server.py``.
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.auto import AutoHTTPProtocol

__all__ = ["NoDelayHTTPProtocol", "set_nodelay"]


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Turn Nagle's algorithm off on the TCP socket under ``transport``.

    Leaves a transport that is not TCP over IPv4/IPv6 (a Unix socket, none at all) as it is.
    A socket the peer has already reset keeps its setting: nothing more is sent on it.
    """
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # the connection is already gone; the protocol sees that next
        return


# uvicorn declares its choice (httptools, else h11) as a variable of type[asyncio.Protocol],
# which mypy does not take as a base class.
class NoDelayHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's own HTTP protocol (the one ``http="auto"`` picks) with ``TCP_NODELAY`` set
    on each connection before it reads a byte."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Set ``TCP_NODELAY``, then let uvicorn take the connection."""
        set_nodelay(transport)
        super().connection_made(transport)
