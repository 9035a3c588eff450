"""Real ``nats-server`` processes for tests: one node or a three-node JetStream cluster, on
free loopback ports, each with its own store directory, started and killed by the test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

BINARY = shutil.which("nats-server") or "/usr/sbin/nats-server"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_server() -> None:
    """Skip unless Debian's nats-server is installed (scripts/test installs it)."""
    if not os.path.exists(BINARY):
        pytest.skip("nats-server is not installed (apt-get install nats-server)")


class NatsServer:
    """One nats-server with JetStream; ``config`` is extra configuration text."""

    def __init__(self, base: Path, name: str = "n1", *, extra: str = "") -> None:
        self.name = name
        self.port = free_port()
        self.http = free_port()
        self.cluster_port = free_port()
        self.dir = base / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.extra = extra
        self.routes: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL of this server."""
        return f"nats://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        """Write this server's configuration file (ports, store, routes, extra)."""
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.routes)
        cluster = (
            f"cluster {{ name: rtrace; listen: 127.0.0.1:{self.cluster_port}; routes: [{routes}] }}"
            if self.routes
            else ""
        )
        text = (
            f"server_name: {self.name}\nlisten: 127.0.0.1:{self.port}\n"
            f"http: 127.0.0.1:{self.http}\n"
            f'jetstream {{ store_dir: "{self.dir / "js"}" }}\n{cluster}\n{self.extra}\n'
        )
        path = self.dir / "server.conf"
        path.write_text(text)
        return path

    def start(self, *, wait: bool = True) -> NatsServer:
        """Start the server (again, on the same ports and store) and wait until ready."""
        config = self.write_config()
        log = open(self.dir / "server.log", "ab")  # noqa: SIM115 -- kept by the process
        self.proc = subprocess.Popen([BINARY, "-c", str(config)], stdout=log, stderr=log)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Poll the monitoring port's /healthz until JetStream answers."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited: {self.log()[-2000:]}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.http}/healthz", timeout=1
                ) as r:
                    if json.load(r).get("status") == "ok":
                        return
            except urllib.error.HTTPError as exc:  # not ready yet (503): it holds a response
                last = repr(exc)
                exc.close()
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last = repr(exc)
            time.sleep(0.05)
        raise RuntimeError(f"nats-server {self.name} not ready: {last}\n{self.log()[-2000:]}")

    def log(self) -> str:
        """What the server wrote to its log so far."""
        try:
            return (self.dir / "server.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop the server with ``sig`` (SIGKILL by default) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None

    def jsz(self) -> dict:  # type: ignore[type-arg]
        """The monitoring endpoint's JetStream report."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.http}/jsz?streams=true", timeout=2
        ) as r:
            return json.load(r)  # type: ignore[no-any-return]


class Cluster:
    """Three nats-servers routed to each other: a JetStream cluster."""

    def __init__(self, base: Path) -> None:
        self.servers = [NatsServer(base, f"n{i}") for i in range(1, 4)]
        for s in self.servers:
            s.routes = [o.cluster_port for o in self.servers if o is not s]

    @property
    def url(self) -> str:
        """The three client URLs, comma-separated (as ``rtrace`` takes them)."""
        return ",".join(s.url for s in self.servers)

    def start(self) -> Cluster:
        """Start all three servers and wait until each is ready."""
        for s in self.servers:
            s.start(wait=False)
        for s in self.servers:
            s.wait_ready(40)
        return self

    def stop(self) -> None:
        """Kill every server."""
        for s in self.servers:
            s.kill()

    def by_name(self, name: str) -> NatsServer:
        """The server with this ``server_name``."""
        return next(s for s in self.servers if s.name == name)
