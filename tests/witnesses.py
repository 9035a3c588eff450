"""Helpers for the witness tests: our witness on a real loopback server, waiting on a
condition with a deadline, and a witness process that can be killed mid-request."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from reasoning_trace.checkpoint import Checkpoints, Entry
from reasoning_trace.cosignature import CosignerKey
from reasoning_trace.cosigned import Cosigned
from reasoning_trace.witness import Witness
from reasoning_trace.witness_server import WitnessServer, serve_witness

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 20.0) -> T:
    """Poll ``check`` until it returns something true; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    """Our witness, serving on a loopback port."""

    witness: Witness
    server: WitnessServer
    key: CosignerKey
    state: Path

    @property
    def url(self) -> str:
        """Its URL prefix."""
        return self.server.url

    def line(self) -> str:
        """Its line in a witnesses file."""
        return f"{self.key} {self.url}"

    def stop(self) -> None:
        """Stop serving and let go of its folder."""
        self.server.stop()
        self.witness.close()


@contextmanager
def our_witness(state: Path, name: str = "witness.test/ours", port: int = 0) -> Iterator[Running]:
    """Our witness in ``state`` serving on ``port`` (0: any free one) until the block ends."""
    key = Witness.init(state, name)
    witness = Witness(state, serving=True)
    server = serve_witness(witness, "127.0.0.1", port).start()
    running = Running(witness, server, key, state)
    try:
        yield running
    finally:
        running.stop()


def cosigned_newest(root: Path, witness: str) -> Entry | None:
    """The log's newest checkpoint, if ``witness`` cosigned it (a cosignature is kept)."""
    latest = Checkpoints(root).latest()
    if latest is None:
        return None
    lines = Cosigned(root).lines_for(latest.size, latest.root)
    return latest if any(line.startswith(f"\u2014 {witness} ") for line in lines) else None


def newest_note(root: Path) -> str:
    """The newest checkpoint of the log with every cosignature it received."""
    latest = Checkpoints(root).latest()
    assert latest is not None
    return Cosigned(root).cosigned_note(latest.note, latest.size, latest.root)


@contextmanager
def slow_witness(every: float = 4.0) -> Iterator[str]:
    """A fake witness at the URL yielded: it reads each request, then trickles a 200 answer
    one byte every ``every`` seconds (never done in a test's time); stopped when the block
    ends."""
    import threading

    stop = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)

    def trickle(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000
            for i in range(len(answer)):
                if stop.wait(every if i else 0):
                    return
                try:
                    conn.sendall(answer[i : i + 1])
                except OSError:  # the client gave up and closed
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        acceptor.join(5)
        listener.close()
