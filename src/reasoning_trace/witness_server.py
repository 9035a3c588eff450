"""Our witness on HTTP (C2SP tlog-witness, "HTTP Interface"): a small threaded server of the
standard library, so a witness needs no extra to run.

Routes, with the submission and monitoring prefix both the server's root::

    POST /add-checkpoint           the standard's call; answers as ``witness.Witness`` decides
    GET  /<sha256(origin) hex>/checkpoint
                                   the newest checkpoint cosigned for that log (text/plain):
                                   the log's signature and this witness's cosignature; 404
                                   before the first
    GET  /healthz                  ``ok``

A body needs a ``Content-Length`` (411 without one, 400 when it is not ASCII digits) of at
most 256 KiB (413 otherwise); a request
must arrive within ``timeout`` seconds; keep-alive is supported (HTTP/1.1), as the standard
recommends. No client address is logged.
Tests: ``tests/test_witness.py`` (a real server on a loopback port) and
``tests/test_witness_interop.py`` (driven by aics-witness's own client, checked by aics-tlog).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .errors import StorageError
from .witness import Answer, Witness

__all__ = ["WitnessServer", "serve_witness"]

logger = logging.getLogger("reasoning_trace")
MAX_BODY = 256 * 1024
_MONITOR = re.compile(r"/([0-9a-f]{64})/checkpoint")
_LENGTH = re.compile(r"[0-9]{1,12}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "rtrace-witness"
    sys_version = ""
    server: WitnessServer

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("witness http: " + format, *args)

    def _send(self, answer: Answer) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(answer.body)

    def do_POST(self) -> None:
        """``/add-checkpoint``."""
        if self.path.split("?", 1)[0] != "/add-checkpoint":
            self.close_connection = True
            self._send(Answer(404, b"not found\n"))
            return
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            self._send(Answer(411, b"a Content-Length is required\n"))
            return
        if _LENGTH.fullmatch(length.strip()) is None:  # "abc", "-1", "\xb2" (isdigit's "2")
            self.close_connection = True
            self._send(Answer(400, b"the Content-Length is not a decimal number of bytes\n"))
            return
        if int(length) > MAX_BODY:
            self.close_connection = True
            self._send(Answer(413, b"request body too large\n"))
            return
        body = self.rfile.read(int(length))
        try:
            answer = self.server.witness.add_checkpoint(body)
        except (StorageError, OSError) as exc:
            logger.error("reasoning_trace witness: cannot keep its state: %s", exc)
            answer = Answer(503, b"the witness cannot keep its state now\n")
        self._send(answer)

    def do_GET(self) -> None:
        """The monitoring read and ``/healthz``."""
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(Answer(200, b"ok\n"))
            return
        match = _MONITOR.fullmatch(path)
        if match is None:
            self._send(Answer(404, b"not found\n"))
            return
        try:
            note = self.server.witness.latest(match.group(1))
        except StorageError as exc:
            logger.error("reasoning_trace witness: %s", exc)
            self._send(Answer(503, b"the witness cannot read its state now\n"))
            return
        if note is None:
            self._send(Answer(404, b"nothing cosigned for this log\n"))
        else:
            self._send(Answer(200, note.encode()))


class WitnessServer(ThreadingHTTPServer):
    """The HTTP server of one ``Witness``; ``url`` is its prefix."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, witness: Witness, host: str, port: int, *, timeout: float = 10.0) -> None:
        self.witness = witness
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()  # open keep-alive connections
        _Handler.timeout = timeout
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, the submission and monitoring prefix."""
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{name}]" if ":" in name else name
        return f"http://{shown}:{port}"

    def start(self) -> WitnessServer:
        """Serve in a background thread (for embedding and tests); ``shutdown`` stops it."""
        threading.Thread(target=self.serve_forever, name="rtrace-witness", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving: no new connection, and the open keep-alive ones are cut (a witness
        that stops answers nobody)."""
        self.shutdown()
        self.server_close()
        with self.lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):  # already closed by its client
                    connection.shutdown(socket.SHUT_RDWR)


def serve_witness(witness: Witness, host: str = "127.0.0.1", port: int = 0) -> WitnessServer:
    """A bound server for ``witness`` (port 0: a free one, see ``url``), not yet serving."""
    return WitnessServer(witness, host, port)
