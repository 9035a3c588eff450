"""What the dashboard tests share: Debian's Chromium driven by Playwright, a real uvicorn
serving a log on loopback, a TCP proxy that can cut every connection (a server that drops
its streams), and waiting on conditions with deadlines."""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from reasoning_trace import DecisionLog
from reasoning_trace.server import Tokens, create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
needs_browser = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (scripts/test installs it)"
)
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, condition: Callable[[], Any], seconds: float = 30.0) -> Any:
    """Poll ``condition`` until it is truthy (returned) or the deadline passes (fail)."""
    deadline = time.monotonic() + seconds
    pause = threading.Event()
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        pause.wait(0.02)
    raise AssertionError(f"not within {seconds} s: {what}")


@contextlib.contextmanager
def serving(
    log: DecisionLog, tokens: Tokens | None = None, *, verify_every: float = 0.5
) -> Iterator[str]:
    """The API and dashboard over ``log`` on a real uvicorn on loopback; yields its URL."""
    app = create_app(log, tokens, verify_every=verify_every)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), log_level="warning", timeout_graceful_shutdown=2
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    wait_for("the server to start", lambda: srv.started or not thread.is_alive())
    assert srv.started
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@dataclass
class Proxy:
    """A TCP proxy to ``upstream`` (host, port) on a free loopback port. ``cut()`` closes
    every connection through it, as a server that drops its streams would; while ``held``,
    new connections are closed at once (the server is unreachable). ``requests`` keeps the
    head of each request that went through (as the first bytes of a read from the client)."""

    upstream: tuple[str, int]
    port: int = field(default_factory=free_port)
    held: bool = False
    requests: list[bytes] = field(default_factory=list)
    _open: set[socket.socket] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        """The proxy's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        """Take connections; pipe each to a new connection upstream."""
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.held:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, server))
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        """Copy bytes one way until either side closes; then close both."""
        try:
            while data := source.recv(65536):
                if from_client and data[:8].split(b" ", 1)[0] in (b"GET", b"POST", b"HEAD"):
                    self.requests.append(data.split(b"\r\n\r\n", 1)[0])
                sink.sendall(data)
        except OSError:
            pass  # the other direction, or cut(), closed the sockets: this pipe ends too
        finally:
            for s in (source, sink):
                with self._lock:
                    self._open.discard(s)
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def cut(self) -> None:
        """Close every connection through the proxy now."""
        with self._lock:
            sockets = list(self._open)
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop listening and cut every connection."""
        self._server.close()
        self.cut()


def stream_requests(proxy: Proxy) -> list[bytes]:
    """The heads of the event-stream requests that went through ``proxy``."""
    return [r for r in proxy.requests if r.startswith(b"GET /v1/stream")]


def feed_seqs(page: Any) -> list[int]:
    """The seqs of the rows the feed shows, top to bottom."""
    return [
        int(s)
        for s in page.evaluate(
            "() => [...document.querySelectorAll('#feed tbody tr')].map(r => r.dataset.seq)"
        )
    ]


def launch(pw: Any) -> Any:
    """Debian's Chromium, headless."""
    return pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
