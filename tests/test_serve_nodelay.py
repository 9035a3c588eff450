"""``rtrace serve`` turns Nagle's algorithm off on every connection it accepts.

With Nagle on, each keep-alive request after the first waits for the client's delayed ACK
(~44 ms on Linux): ``--workers 2`` on asyncio answered ~640 POST/s. Nothing here is timed: the
test takes a copy of the server's own socket for its connection (Linux ``pidfd_getfd(2)``) and
reads ``TCP_NODELAY`` with ``getsockopt``. It runs a real ``rtrace serve`` with one and two
processes, with uvloop and httptools (what ``[server]`` installs) and without them (hidden
from the server, as on an install of plain ``uvicorn``, where asyncio and h11 serve and the
two-process case lost the option: uvicorn issue #3149).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import http.client
import importlib.util
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import reasoning_trace

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads another process's socket: Linux only"
)

SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture (since 5.6)
HIDDEN = ("uvloop", "httptools")


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from ``/proc/*/stat``)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # a process that ended while we looked
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found = [pid]
    for candidate in found:
        found.extend(child for child, parent in parents.items() if parent == candidate)
    return found


def copy_fd(pid: int, fd: int) -> int:
    """A descriptor of ours for process ``pid``'s descriptor ``fd`` (``pidfd_getfd``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        copied = int(libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0))
    finally:
        os.close(pidfd)
    if copied < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return copied


def server_side(pid: int, client: socket.socket) -> tuple[int, socket.socket]:
    """The process under ``pid`` holding the other end of ``client``, and a copy of its socket."""
    peer = client.getsockname()
    for process in descendants(pid):
        with contextlib.suppress(FileNotFoundError):
            fds = os.listdir(f"/proc/{process}/fd")
            for name in fds:
                with contextlib.suppress(FileNotFoundError):
                    if not os.readlink(f"/proc/{process}/fd/{name}").startswith("socket:"):
                        continue
                try:
                    copied = copy_fd(process, int(name))
                except OSError as exc:
                    if exc.errno in (errno.EPERM, errno.ENOSYS):
                        pytest.skip(f"pidfd_getfd is not allowed here: {exc}")
                    continue  # closed meanwhile
                sock = socket.socket(fileno=copied)
                try:
                    if sock.family == client.family and sock.getpeername() == peer:
                        return process, sock
                except OSError:  # a listening socket, or not connected
                    pass
                sock.close()
    raise AssertionError(f"no process under {pid} holds the server end of {peer}")


def maps_of(pid: int) -> str:
    """The files process ``pid`` has mapped (its loaded extension modules among them)."""
    return Path(f"/proc/{pid}/maps").read_text()


@contextlib.contextmanager
def serving(root: Path, workers: int, hidden: Path | None) -> Iterator[tuple[int, int]]:
    """A real ``rtrace serve --workers N`` on a free port; yields (its pid, the port)."""
    src = str(Path(reasoning_trace.__file__).resolve().parents[1])
    path = [str(hidden)] if hidden else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*path, src]))
    port = free_port()
    command = [sys.executable, "-m", "reasoning_trace", "--dir", str(root), "serve"]
    server = subprocess.Popen(
        [*command, "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert server.stderr is not None
    try:
        for _ in range(600):  # until every worker answers, or the server ends
            if server.poll() is not None:
                raise AssertionError(server.stderr.read().decode())
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(0.05)
        yield server.pid, port
    finally:
        server.terminate()
        server.wait(timeout=60)
        server.stderr.close()


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("stack", ["standard", "plain"])
def test_accepted_connections_have_tcp_nodelay(
    root: Path, tmp_path: Path, workers: int, stack: str
) -> None:
    """The server's end of a keep-alive connection has TCP_NODELAY on, in one process and in
    two, on uvloop + httptools and on asyncio + h11."""
    hidden = None
    if stack == "standard" and any(importlib.util.find_spec(name) is None for name in HIDDEN):
        pytest.skip("uvloop or httptools is not installed (the [server] extra installs both)")
    if stack == "plain":
        hidden = tmp_path / "hidden"
        for name in HIDDEN:
            (hidden / name).mkdir(parents=True)
            (hidden / name / "__init__.py").write_text(
                f"raise ImportError('{name} is hidden: an install of plain uvicorn')\n"
            )
    with serving(root, workers, hidden) as (pid, port):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for _ in range(2):  # the second request rides the same connection
                connection.request("GET", "/healthz")
                response = connection.getresponse()
                response.read()
                assert response.status == 200
            assert connection.sock is not None
            process, sock = server_side(pid, connection.sock)
            with sock:
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            loaded = maps_of(process)
            for name in HIDDEN:
                assert (f"/{name}/" in loaded) is (stack == "standard"), name
        finally:
            connection.close()
