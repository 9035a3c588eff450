"""Running ``rtrace serve`` for a benchmark: a temporary log, a free port, ready when it answers."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping

import httpx


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def served(*options: str, env: Mapping[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """``rtrace serve OPTIONS`` on a temporary log (``env`` added to the environment); yields
    (base URL, work directory)."""
    work = tempfile.mkdtemp(prefix="rtrace-serve-")
    port = free_port()
    environment = {**os.environ, "REASONING_TRACE_KEY": os.path.join(work, "key"), **(env or {})}
    server = subprocess.Popen(
        [
            shutil.which("rtrace") or "rtrace",
            "--dir",
            os.path.join(work, "log"),
            "serve",
            "--port",
            str(port),
            *options,
        ],
        env=environment,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(400):
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url, work
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
