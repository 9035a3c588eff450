"""The HTTP API against hostile clients, over real HTTP on a free loopback port.

Cross-site writes and DNS rebinding, malformed requests (always a 4xx problem, never a 500),
stream slots that bad requests must not leak, and clients that try to make the server hold
memory: each kind with the cases that once got through.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from reasoning_trace import DecisionLog
from reasoning_trace.server import create_app

from .test_server import free_port

DECISION = {"action": "csrf", "approved": True}


@contextmanager
def serving(log: DecisionLog, **options: object) -> Iterator[str]:
    """``create_app(log, **options)`` on a real uvicorn in this process; yields its URL."""
    app = create_app(log, verify_every=0, **options)  # type: ignore[arg-type]
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="error")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    ready = threading.Event()
    while not srv.started and thread.is_alive():
        ready.wait(0.01)
    assert srv.started
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def open_server(root: Path) -> Iterator[tuple[str, DecisionLog]]:
    """A tokenless server on loopback (the set-up a developer runs) and its log."""
    with DecisionLog(str(root), sync="never") as log, serving(log) as url:
        yield url, log


def assert_problem(response: httpx.Response, status: int, *words: str) -> dict[str, object]:
    """``response`` is an RFC 9457 problem with ``status`` whose detail has every word."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["type"] and body["title"]
    for word in words:
        assert word in body["detail"], body
    return dict(body)


# --- 1. cross-site requests and DNS rebinding ------------------------------------------------


def test_a_web_page_cannot_write(open_server: tuple[str, DecisionLog]) -> None:
    """text/plain and form bodies are 415; a cross-site Origin or Sec-Fetch-Site is 403."""
    url, log = open_server
    body = json.dumps(DECISION)
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""):
        done = httpx.post(f"{url}/v1/decisions", content=body, headers={"Content-Type": kind})
        assert_problem(done, 415, "application/json")
    simple = httpx.post(
        f"{url}/v1/decisions",
        content=body,
        headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
    )
    assert_problem(simple, 403, "cross-site")
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": url.replace("127.0.0.1", "localhost")},  # another origin, same machine
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        done = httpx.post(f"{url}/v1/decisions", json=DECISION, headers=headers)
        assert_problem(done, 403, "cross-site")
    assert len(log) == 0
    same = httpx.post(
        f"{url}/v1/decisions",
        json=DECISION,
        headers={"Origin": url, "Sec-Fetch-Site": "same-origin"},
    )
    assert same.status_code == 201 and len(log) == 1
    assert httpx.post(f"{url}/v1/decisions", json=DECISION).status_code == 201  # curl, scripts


def test_only_the_served_host_names_are_answered(root: Path) -> None:
    """Host: evil.example (DNS rebinding) is refused on every route; loopback names are served."""
    with DecisionLog(str(root), sync="never") as log:
        with serving(log) as url:
            port = url.rsplit(":", 1)[1]
            for path in ("/healthz", "/v1/decisions", "/v1/checkpoint", "/", "/metrics"):
                done = httpx.get(f"{url}{path}", headers={"Host": "evil.example"})
                assert_problem(done, 400, "evil.example", "--allowed-host")
            posted = httpx.post(
                f"{url}/v1/decisions", json=DECISION, headers={"Host": f"evil.example:{port}"}
            )
            assert_problem(posted, 400, "evil.example")
            for name in ("localhost", "127.0.0.1", "[::1]", "LOCALHOST"):
                done = httpx.get(f"{url}/healthz", headers={"Host": f"{name}:{port}"})
                assert done.status_code == 200, name
            for bad in ("", "localhost:x", "[::1", "a b"):
                assert httpx.get(f"{url}/healthz", headers={"Host": bad}).status_code == 400
        with serving(log, allowed_hosts=["rtrace.internal"]) as url:
            done = httpx.get(f"{url}/healthz", headers={"Host": "rtrace.internal"})
            assert done.status_code == 200
            assert httpx.get(f"{url}/healthz", headers={"Host": "evil.example"}).status_code == 400
        with serving(log, allowed_hosts=["*"]) as url:
            done = httpx.get(f"{url}/healthz", headers={"Host": "anything.example"})
            assert done.status_code == 200
        assert len(log) == 0


# --- 2. malformed requests are 4xx problems --------------------------------------------------


def test_malformed_requests_are_problems_not_server_errors(
    open_server: tuple[str, DecisionLog],
) -> None:
    """Deep bodies, odd digits, huge numbers and bad UTF-8: each a 4xx problem naming it."""
    url, log = open_server
    log.record("a", True, {}, {})
    log.record("b", True, {}, {})

    def post(raw: bytes) -> httpx.Response:
        return httpx.post(
            f"{url}/v1/decisions", content=raw, headers={"Content-Type": "application/json"}
        )

    for depth in (5_000, 100_000):
        assert_problem(post(b"[" * depth + b"]" * depth), 400, "nested too deeply")
        deep = b'{"action":"a","approved":true,"subject":{"x":' + b"[" * depth + b"]" * depth
        assert_problem(post(deep + b"}}"), 400, "nested too deeply")
    assert_problem(post('{"action":"é"}'.encode("utf-16")), 400, "not UTF-8")
    assert_problem(post(b'{"action":"\xb2","approved":true}'), 400, "not UTF-8")
    assert_problem(post(b'{"action":"a","approved":tru'), 400, "not JSON")

    stream = f"{url}/v1/stream"
    for last in (b"\xb2", "１".encode(), b"1" * 5_000, b"-1", b"+1", b"9223372036854775808"):
        assert_problem(httpx.get(stream, headers={"Last-Event-ID": last}), 400, "Last-Event-ID")

    for key in ("%C2%B2", "%EF%BC%91", "%D9%A1", "1" * 5_000, "99999999999999999999"):
        assert_problem(httpx.get(f"{url}/v1/decisions/{key}"), 404, "no decision")
    assert httpx.get(f"{url}/v1/decisions/1").json()["decision"]["action"] == "b"

    for query in ("since=99999999999d", "until=99999999999w", "since=%D9%A1d", "since=nan"):
        assert_problem(httpx.get(f"{url}/v1/decisions?{query}"), 400)
        assert_problem(httpx.get(f"{url}/v1/stats?{query}"), 400)
    for query in ("cursor=%EF%BC%91", "cursor=" + "9" * 5_000, "limit=%C2%B2", "limit=0"):
        assert_problem(httpx.get(f"{url}/v1/decisions?{query}"), 422)
    assert_problem(httpx.get(f"{url}/v1/proofs/consistency?old={'9' * 5_000}"), 422)
    assert_problem(httpx.get(f"{url}/v1/proofs/consistency?old=5"), 400)
    assert_problem(httpx.get(f"{url}/v1/nothing-here"), 404)
    gone = httpx.delete(f"{url}/v1/decisions/0")
    assert_problem(gone, 405) and "GET" in gone.headers["allow"]
    assert len(log) == 2


def test_json_read_differently_by_readers_is_refused(open_server: tuple[str, DecisionLog]) -> None:
    """Repeated keys and integers beyond 2**53-1 are 422 naming the path; nothing is stored."""
    url, log = open_server
    cases = {
        b'{"action":"a","approved":false,"approved":true}': "approved",
        b'{"action":"a","approved":true,"subject":{"x":1,"x":2}}': "subject.x",
        b'{"action":"a","approved":true,"votes":{"v":{"passed":true,"passed":false}}}': (
            "votes.v.passed"
        ),
        b'{"action":"a","approved":true,"subject":{"n":9007199254740993}}': "subject.n",
        b'{"action":"a","approved":true,"subject":{"n":[-9007199254740993]}}': "subject.n[0]",
        b'{"action":"a","approved":true,"subject":{"n":' + b"7" * 5_000 + b"}}": "subject.n",
    }
    for raw, path in cases.items():
        done = httpx.post(
            f"{url}/v1/decisions", content=raw, headers={"Content-Type": "application/json"}
        )
        assert assert_problem(done, 422, path)["path"] == path
    edge = b'{"action":"a","approved":true,"subject":{"n":9007199254740991,"m":1e400}}'
    inf = httpx.post(
        f"{url}/v1/decisions", content=edge, headers={"Content-Type": "application/json"}
    )
    assert assert_problem(inf, 422, "subject.m")["path"] == "subject.m"
    assert len(log) == 0


# --- 3. a bad request never leaks a resource ------------------------------------------------


def test_bad_stream_requests_leak_no_slot(root: Path) -> None:
    """Twenty refused streams and twenty that leave at once; the client can still stream."""
    with DecisionLog(str(root), sync="never") as log, serving(log, streams_per_client=2) as url:
        for i in range(20):
            last = ["²", "1" * 5_000, "x", "-1"][i % 4].encode()
            assert httpx.get(f"{url}/v1/stream", headers={"Last-Event-ID": last}).status_code == 400
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as s:
                s.sendall(b"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        deadline = time.monotonic() + 10
        while True:  # the server frees a slot when it sees the client gone
            with (
                httpx.stream("GET", f"{url}/v1/stream", timeout=10) as a,
                httpx.stream("GET", f"{url}/v1/stream", timeout=10) as b,
            ):
                if a.status_code == b.status_code == 200:
                    break
            assert time.monotonic() < deadline, "stream slots were not freed"
            threading.Event().wait(0.05)


# --- 4. memory and labels stay bounded -----------------------------------------------------


def test_chunked_body_over_the_limit_is_refused_while_reading(
    open_server: tuple[str, DecisionLog],
) -> None:
    """A chunked body is cut off at the limit with 413: the rest is never read."""
    url, log = open_server
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"action":"a","approved":true,"reason":"'
        for _ in range(400):  # up to 400 MB, if the server kept reading
            sent += 1 << 20
            yield b"x" * (1 << 20)
        yield b'"}'

    try:
        done = httpx.post(
            f"{url}/v1/decisions",
            content=chunks(),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert_problem(done, 413, "over the limit")
    except httpx.TransportError:
        pass  # the server answered 413 and closed while the body was still being sent
    assert sent < 64 << 20 and len(log) == 0


def test_metric_labels_are_bounded(root: Path) -> None:
    """5,000 distinct actions give at most 51 action labels on /metrics (the rest: _other)."""
    with DecisionLog(str(root), sync="never") as log:
        for i in range(5_000):
            log.record(f"action-{i}", i % 2 == 0, {}, {})
        for _ in range(10):
            log.record("common", True, {}, {})
        with serving(log, metric_actions=50) as url:
            text = httpx.get(f"{url}/metrics").text
    labels = set(re.findall(r'rtrace_decisions\{action="([^"]*)"', text))
    assert len(labels) == 51 and "common" in labels and "_other" in labels
    other = re.search(r'rtrace_decisions\{action="_other",verdict="approved"\} (\S+)', text)
    assert other is not None and float(other.group(1)) > 2_000


def test_a_stalled_client_is_cut_and_resumes(root: Path) -> None:
    """A client that stops reading is cut, its slot freed; it resumes from its last id."""
    with (
        DecisionLog(str(root), sync="never") as log,
        serving(log, streams_per_client=1, stall_seconds=0.5, stream_budget=64 << 10) as url,
    ):
        port = int(url.rsplit(":", 1)[1])
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", port))
        slow.sendall(b"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nLast-Event-ID: 0\r\n\r\n")
        log.record("first", True, {}, {})
        reason = "r" * 4096
        deadline = time.monotonic() + 60
        while True:  # write until the server has cut the client that does not read
            for _ in range(200):
                log.record("bulk", True, {}, {}, reason)
            with httpx.stream("GET", f"{url}/v1/stream", timeout=10) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "the stalled client was never cut"
        received = b""
        slow.settimeout(10)
        while chunk := slow.recv(1 << 20):  # what it was sent before the cut, then EOF
            received += chunk
        slow.close()
        ids = [int(i) for i in re.findall(rb"\nid: (\d+)\n", received)]
        assert ids and ids == list(range(1, ids[-1] + 1))
        total = len(log)
        headers = {"Last-Event-ID": str(ids[-1])}
        with httpx.stream("GET", f"{url}/v1/stream", headers=headers, timeout=30) as resumed:
            seqs: list[int] = []
            for line in resumed.iter_lines():
                if line.startswith("id: "):
                    seqs.append(int(line[4:]))
                    if seqs[-1] == total - 1:
                        break
        assert seqs == list(range(ids[-1] + 1, total))


@contextmanager
def rtrace_serve(root: Path, *options: str) -> Iterator[str]:
    """``rtrace serve`` in its own process on a free port; yields its URL once it answers."""
    import shutil
    import subprocess

    port = free_port()
    command = [shutil.which("rtrace") or "rtrace", "--dir", str(root), "serve", "--port", str(port)]
    server = subprocess.Popen(
        [*command, *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, "did not start"
                threading.Event().wait(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_forwarded_for_is_trusted_only_when_configured(root: Path) -> None:
    """X-Forwarded-For does not make another client unless --trust-proxy names the proxy."""
    spoofed = {"X-Forwarded-For": "203.0.113.9"}
    for trusted in (False, True):
        options = ["--streams-per-client", "1"] + (["--trust-proxy", "127.0.0.1"] * trusted)
        with (
            rtrace_serve(root, *options) as url,
            httpx.stream("GET", f"{url}/v1/stream", timeout=10) as held,
            httpx.stream("GET", f"{url}/v1/stream", headers=spoofed, timeout=10) as other,
        ):
            assert held.status_code == 200
            if trusted:
                assert other.status_code == 200  # the proxy said so, and it is trusted
            else:
                other.read()
                assert_problem(other, 429, "streams per client")


def test_rtrace_serve_allowed_host(root: Path) -> None:
    """rtrace serve answers loopback names, refuses others, and serves --allowed-host names."""
    with rtrace_serve(root, "--allowed-host", "rtrace.internal") as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        evil = httpx.get(f"{url}/healthz", headers={"Host": "evil.example"})
        assert_problem(evil, 400, "evil.example")
        ok = httpx.get(f"{url}/healthz", headers={"Host": "rtrace.internal"})
        assert ok.status_code == 200


def test_server_memory_under_abusive_clients() -> None:
    """rtrace serve's peak RSS stays bounded under a 200 MB chunked body and 50 stalled streams
    while 10,000 records of 4 KB are written (bench/bench_hostile.py runs the same loads)."""
    from bench.bench_hostile import (
        chunked_post,
        memory,
        open_slow_clients,
        serve,
        settle,
        write_records,
    )

    with serve() as server:
        before = memory(server.pid)[0]
        sent, answer = chunked_post(server.port, 200, seconds=60)
        assert answer.startswith(b"HTTP/1.1 413") and sent < 64 << 20
        assert memory(server.pid)[1] - before < 40 << 20
    with serve() as server:
        before = memory(server.pid)[0]
        clients = open_slow_clients(server.port, 50)
        try:
            write_records(server.root, 10_000)
            deadline = time.monotonic() + 60
            while httpx.get(f"{server.url}/healthz", timeout=30).json()["records"] < 10_000:
                assert time.monotonic() < deadline
            settle(server.pid, quiet=2.0, limit=60)  # until its peak stops growing
            assert memory(server.pid)[1] - before < 60 << 20
        finally:
            for client in clients:
                client.close()
        assert httpx.get(f"{server.url}/healthz", timeout=30).json()["records"] == 10_000
