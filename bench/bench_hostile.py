"""Memory of ``rtrace serve`` under abusive clients: the server process's peak RSS.

Two loads, each on a fresh ``rtrace serve`` (its own process, a temporary log, loopback):

- ``chunked``: one POST of a chunked body of ``--body-mb`` MB (no Content-Length), sent until
  the server answers or closes;
- ``slow``: ``--clients`` event-stream clients that never read (receive buffer 4 KB), while
  ``--records`` decisions with a 4 KB reason are written to the log by another process; then
  the clients leave.

RSS is read from ``/proc/<pid>/status``: VmHWM (the kernel's peak) and VmRSS (now).

    python bench/bench_hostile.py [--load chunked|slow|both] [--body-mb 400]
                                  [--clients 50] [--records 31741]

Run with ``PYTHONPATH=<a checkout>/src`` to measure that checkout's server.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of process ``pid``, in bytes."""
    fields = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


@dataclass
class Server:
    """A running ``rtrace serve``: its URL, process id and log root."""

    url: str
    pid: int
    root: str
    port: int


@contextlib.contextmanager
def serve(*options: str) -> Iterator[Server]:
    """``rtrace serve`` (this interpreter, ``python -m reasoning_trace``) on a temporary log."""
    work = tempfile.mkdtemp(prefix="rtrace-hostile-")
    root = os.path.join(work, "log")
    port = free_port()
    env = dict(os.environ, REASONING_TRACE_KEY=os.path.join(work, "key"))
    command = [sys.executable, "-m", "reasoning_trace", "--dir", root, "serve", "--port", str(port)]
    server = subprocess.Popen([*command, *options], env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("rtrace serve did not start") from None
                time.sleep(0.05)
        yield Server(url, server.pid, root, port)
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


def chunked_post(port: int, megabytes: int, seconds: float = 120) -> tuple[int, bytes]:
    """POST a chunked body of ``megabytes`` MB until the server answers or closes.

    Returns (bytes of body sent, the start of the server's answer).
    """
    sent = 0
    answer = b""
    mb = b"x" * (1 << 20)
    deadline = time.monotonic() + seconds
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            b"POST /v1/decisions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        s.setblocking(False)
        head = b'{"action":"a","approved":true,"reason":"'
        chunks = [head] + [mb] * megabytes
        try:
            for chunk in chunks:
                frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
                view = memoryview(frame)
                while view:
                    if time.monotonic() > deadline:
                        return sent, answer
                    with contextlib.suppress(BlockingIOError):
                        answer += s.recv(65536)
                    if answer:
                        return sent, answer
                    try:
                        view = view[s.send(view) :]
                    except BlockingIOError:
                        time.sleep(0.001)
                sent += len(chunk)
            s.sendall(b'2\r\n"}\r\n0\r\n\r\n')
            s.setblocking(True)
            s.settimeout(seconds)
            answer += s.recv(65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
    return sent, answer


def open_slow_clients(port: int, count: int) -> list[socket.socket]:
    """``count`` event-stream clients with a 4 KB receive buffer that never read."""
    clients = []
    for _ in range(count):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        clients.append(s)
    return clients


def write_records(root: str, count: int, reason_bytes: int = 4096) -> None:
    """``count`` decisions with a reason of ``reason_bytes``, written by this process."""
    from reasoning_trace import DecisionLog

    reason = "r" * reason_bytes
    with DecisionLog(root, sync="never") as log:
        for i in range(count):
            log.record("bulk", True, {}, {"i": i}, reason)


def settle(pid: int, quiet: float = 3.0, limit: float = 120.0) -> None:
    """Wait until the server's peak RSS has not grown for ``quiet`` seconds (at most ``limit``)."""
    deadline = time.monotonic() + limit
    last, since = memory(pid)[1], time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.2)
        peak = memory(pid)[1]
        if peak > last:
            last, since = peak, time.monotonic()


def mb(n: int) -> str:
    """Bytes as MB."""
    return f"{n / 1e6:,.0f} MB"


def run_chunked(body_mb: int) -> None:
    """The chunked-body load."""
    with serve() as server:
        rss, _ = memory(server.pid)
        start = time.monotonic()
        sent, answer = chunked_post(server.port, body_mb)
        took = time.monotonic() - start
        after_rss, after_hwm = memory(server.pid)
        status = answer.split(b"\r\n", 1)[0].decode(errors="replace") or "(closed)"
    print(
        f"chunked {body_mb} MB body: {mb(sent)} sent in {took:.1f} s, answer {status!r}; "
        f"server RSS {mb(rss)} before, peak {mb(after_hwm)} (VmHWM), {mb(after_rss)} after"
    )


def run_slow(clients: int, records: int) -> None:
    """The slow-client load."""
    with serve() as server:
        rss, _ = memory(server.pid)
        sockets = open_slow_clients(server.port, clients)
        start = time.monotonic()
        write_records(server.root, records)
        settle(server.pid)
        for s in sockets:
            s.close()
        httpx.get(f"{server.url}/healthz", timeout=30)
        settle(server.pid)
        after, peak = memory(server.pid)  # VmHWM: the peak over the whole run
        took = time.monotonic() - start
    print(
        f"{clients} clients that never read, {records} records of 4 KB: server RSS {mb(rss)} "
        f"before, peak {mb(peak)} (VmHWM), {mb(after)} after they left ({took:.0f} s)"
    )


def main() -> None:
    """Parse the options, run the loads, print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", choices=["chunked", "slow", "both"], default="both")
    parser.add_argument("--body-mb", type=int, default=400)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--records", type=int, default=31_741)
    args = parser.parse_args()
    import reasoning_trace

    print(f"server code: {os.path.dirname(reasoning_trace.__file__)}")
    if args.load in ("chunked", "both"):
        run_chunked(args.body_mb)
    if args.load in ("slow", "both"):
        run_slow(args.clients, args.records)


if __name__ == "__main__":
    main()
