"""The HTTP API over real HTTP: a uvicorn server on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from reasoning_trace import DecisionLog
from reasoning_trace.proof_check import verify_consistency_proof, verify_inclusion_proof
from reasoning_trace.server import Tokens, create_app

from .test_cli_integrity import rtrace

READ, WRITE = "r-token-0123456789", "w-token-0123456789"


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(root: Path) -> Iterator[tuple[str, DecisionLog]]:
    """The API over the log at ``root`` on a real uvicorn, with a read and a write token."""
    log = DecisionLog(str(root), sync="batch")
    app = create_app(log, Tokens([f"read:{READ}", f"write:{WRITE}"]))
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    started = threading.Event()
    while not srv.started and thread.is_alive():
        started.wait(0.01)
    assert srv.started
    yield f"http://127.0.0.1:{config.port}", log
    srv.should_exit = True
    thread.join(timeout=10)
    log.close()


@pytest.fixture
def server(root: Path) -> Iterator[tuple[str, DecisionLog]]:
    """The API on a real uvicorn, with a read and a write token."""
    with serving(root) as served:
        yield served


def auth(token: str) -> dict[str, str]:
    """An Authorization header."""
    return {"Authorization": f"Bearer {token}"}


DECISION = {
    "action": "rollback",
    "approved": False,
    "votes": {"safety": {"passed": False, "reason": "regression"}},
    "subject": {"agent_id": "a7", "version": "2.1"},
    "reason": "vetoed",
}


def test_post_get_and_prove(server: tuple[str, DecisionLog]) -> None:
    """POST stores a decision (201); GET by id and seq returns it; its proof verifies."""
    url, log = server
    made = httpx.post(f"{url}/v1/decisions", json=DECISION, headers=auth(WRITE))
    assert made.status_code == 201
    stored = made.json()
    assert stored["seq"] == 0 and stored["votes"]["safety"]["passed"] is False
    for key in (stored["id"], "0"):
        got = httpx.get(f"{url}/v1/decisions/{key}", headers=auth(READ))
        assert got.status_code == 200 and got.json()["decision"] == stored
    unsigned = httpx.get(f"{url}/v1/decisions/0?proof=true", headers=auth(READ)).json()
    assert unsigned["proof"] is None  # reading never signs: no checkpoint covers it yet
    log.checkpoint()
    proved = httpx.get(f"{url}/v1/decisions/0?proof=true", headers=auth(READ)).json()
    vkey = (log.root / "checkpoints" / "vkey").read_text()
    line = json.dumps(stored, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    verify_inclusion_proof(proved["proof"], line.encode(), vkey=vkey)
    note = httpx.get(f"{url}/v1/checkpoint", headers=auth(READ))
    assert note.headers["content-type"].startswith("text/plain") and "\n— " in note.text
    assert httpx.get(f"{url}/healthz").json() == {"ok": True, "records": 1}


def test_a_log_cut_short_of_its_checkpoint_is_not_a_500(root: Path) -> None:
    """A decision of a log whose newest checkpoint covers records no longer there: 200, its
    attestation unverified with the reason, and no proof (none can be made in that checkpoint)."""
    with DecisionLog(str(root)) as log:
        for i in range(12):
            log.record("gate", True, {}, {"i": i})
    day = sorted(root.glob("*.jsonl"))[-1]
    day.write_bytes(b"".join(day.read_bytes().splitlines(keepends=True)[:5]))
    with serving(root) as (url, _):
        got = httpx.get(f"{url}/v1/decisions/3?proof=true", headers=auth(READ))
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["proof"] is None and body["signed"]["status"] == "unverified"
    assert "holds 5 records" in body["signed"]["detail"]


def test_auth_and_methods(server: tuple[str, DecisionLog]) -> None:
    """401 without or with a bad token, 403 for a read token writing, 405 for updates."""
    url, _ = server
    assert httpx.post(f"{url}/v1/decisions", json=DECISION).status_code == 401
    assert httpx.get(f"{url}/v1/decisions", headers=auth("nope")).status_code == 401
    denied = httpx.post(f"{url}/v1/decisions", json=DECISION, headers=auth(READ))
    assert denied.status_code == 403 and "only read" in denied.json()["detail"]
    assert httpx.get(f"{url}/v1/decisions", headers=auth(READ)).status_code == 200
    httpx.post(f"{url}/v1/decisions", json=DECISION, headers=auth(WRITE))
    for method in ("PUT", "PATCH", "DELETE"):
        done = httpx.request(method, f"{url}/v1/decisions/0", json=DECISION, headers=auth(WRITE))
        assert done.status_code == 405, method


def test_refusals_name_the_problem(server: tuple[str, DecisionLog]) -> None:
    """422 names the field path, 409 a conflicting id, 413 an oversized body; nothing stored."""
    url, log = server
    bad_vote = {**DECISION, "votes": {"safety": {"passed": "yes"}}}
    refused = httpx.post(f"{url}/v1/decisions", json=bad_vote, headers=auth(WRITE))
    assert refused.status_code == 422 and refused.json()["path"] == "votes.safety.passed"
    nan = httpx.post(
        f"{url}/v1/decisions",
        headers={**auth(WRITE), "content-type": "application/json"},
        content=b'{"action":"a","approved":true,"subject":{"score":NaN}}',
    )
    assert nan.status_code == 422 and nan.json()["path"] == "subject.score"
    missing = httpx.post(f"{url}/v1/decisions", json={"action": "a"}, headers=auth(WRITE))
    assert missing.status_code == 422 and missing.json()["path"] == "approved"
    big = httpx.post(
        f"{url}/v1/decisions", headers=auth(WRITE), json={**DECISION, "reason": "x" * (2 << 20)}
    )
    assert big.status_code == 413
    first = httpx.post(f"{url}/v1/decisions", json={**DECISION, "id": "req-1"}, headers=auth(WRITE))
    again = httpx.post(f"{url}/v1/decisions", json={**DECISION, "id": "req-1"}, headers=auth(WRITE))
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    clash = httpx.post(
        f"{url}/v1/decisions", json={**DECISION, "id": "req-1", "reason": "x"}, headers=auth(WRITE)
    )
    assert clash.status_code == 409
    bad_filter = httpx.get(f"{url}/v1/decisions?since=yesterday-ish", headers=auth(READ))
    assert bad_filter.status_code == 400 and "not a time" in bad_filter.json()["detail"]
    assert len(log) == 1


def test_pagination_without_gaps(server: tuple[str, DecisionLog]) -> None:
    """Cursor pages, newest first, cover every matching decision exactly once."""
    url, log = server
    for i in range(120):
        log.record("rollback" if i % 3 else "halt", i % 2 == 0, {}, {"i": i})
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 50, "action": "rollback"}
        if cursor is not None:
            params["cursor"] = cursor
        page = httpx.get(f"{url}/v1/decisions", params=params, headers=auth(READ)).json()
        seen += [d["seq"] for d in page["decisions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted((i for i in range(120) if i % 3), reverse=True)
    stats = httpx.get(f"{url}/v1/stats", headers=auth(READ)).json()
    assert stats["total"] == 120
    old_note = log.checkpoint()
    log.record("later", True, {}, {})
    new_note = log.checkpoint()
    proof = httpx.get(f"{url}/v1/proofs/consistency?old=120&new=121", headers=auth(READ)).json()
    vkey = (log.root / "checkpoints" / "vkey").read_text()
    verify_consistency_proof(proof, old_note, new_note, vkey=vkey)
    bad = httpx.get(f"{url}/v1/proofs/consistency?old=200", headers=auth(READ))
    assert bad.status_code == 400


def read_events(response: httpx.Response, count: int) -> list[tuple[int, dict]]:
    """Read ``count`` decision events (id, record) from an SSE response."""
    events: list[tuple[int, dict]] = []
    event_id = None
    for line in response.iter_lines():
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: ") and event_id is not None:
            events.append((event_id, json.loads(line[6:])))
            if len(events) == count:
                break
    return events


def test_sse_resumes_without_gaps_or_repeats(server: tuple[str, DecisionLog]) -> None:
    """The stream sends each decision with id = seq and resumes after Last-Event-ID."""
    url, log = server
    log.record("before", True, {}, {})
    with httpx.stream("GET", f"{url}/v1/stream", headers=auth(READ), timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for i in range(5):
            log.record("live", True, {}, {"i": i})
        first = read_events(response, 3)
    assert [e for e, _ in first] == [1, 2, 3]
    for i in range(3):
        log.record("while-away", True, {}, {"i": i})
    headers = {**auth(READ), "Last-Event-ID": str(first[-1][0])}
    with httpx.stream("GET", f"{url}/v1/stream", headers=headers, timeout=10) as response:
        rest = read_events(response, 5)
    assert [e for e, _ in rest] == [4, 5, 6, 7, 8]
    assert [r["seq"] for _, r in rest] == [4, 5, 6, 7, 8]


def test_serve_refuses_open_binding_without_tokens(root: Path) -> None:
    """rtrace serve will not listen beyond loopback without tokens."""
    done = rtrace(root, "serve", "--host", "0.0.0.0", env={"REASONING_TRACE_TOKENS": ""})
    assert done.returncode == 2 and "without tokens" in done.stderr


def test_metrics_and_verify(server: tuple[str, DecisionLog]) -> None:
    """/metrics speaks Prometheus text with counts and latency; /v1/verify reports the log."""
    url, log = server
    for i in range(3):
        httpx.post(
            f"{url}/v1/decisions", json={**DECISION, "approved": i == 0}, headers=auth(WRITE)
        )
    log.checkpoint()
    text = httpx.get(f"{url}/metrics", headers=auth(READ)).text
    assert 'rtrace_decisions{action="rollback",verdict="approved"} 1.0' in text
    assert 'rtrace_decisions{action="rollback",verdict="rejected"} 2.0' in text
    assert "rtrace_append_seconds_count 3.0" in text
    assert "rtrace_checkpoint_size 3.0" in text
    deadline = threading.Event()
    result = httpx.get(f"{url}/v1/verify", headers=auth(READ)).json()
    while result.get("status") in ("not yet run", "empty") and not deadline.wait(0.05):
        result = httpx.get(f"{url}/v1/verify", headers=auth(READ)).json()
    assert result["status"] in ("ok", "failed") and "ran_at" in result


def test_stream_limit_per_client(root: Path) -> None:
    """A client may hold only so many event streams at once (429 beyond)."""
    log = DecisionLog(str(root), sync="never")
    app = create_app(log, streams_per_client=1, verify_every=0)
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started and thread.is_alive():
        threading.Event().wait(0.01)
    url = f"http://127.0.0.1:{config.port}"
    try:
        with httpx.stream("GET", f"{url}/v1/stream", timeout=10) as first:
            assert first.status_code == 200
            events = first.iter_lines()  # kept: dropping it would close the stream
            next(events)
            assert httpx.get(f"{url}/v1/stream", timeout=10).status_code == 429
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        log.close()


def test_schemathesis_against_the_openapi_document(
    server: tuple[str, DecisionLog], tmp_path: Path
) -> None:
    """Generated requests, then stateful sequences, over the whole schema with every check on:
    no 5xx, and every response matches the schema (status, content type, body)."""
    url, _ = server
    st = shutil.which("st") or shutil.which("schemathesis")
    assert st, "schemathesis is a test dependency"
    config = tmp_path / "schemathesis.toml"
    # Data the schema allows may still be refused for what a schema cannot say: a seq or id
    # not in the log (404), a caller id already stored with other content (409), a proof
    # between sizes the log does not have or a time range that ends before it starts (400).
    config.write_text(
        "[checks.positive_data_acceptance]\n"
        'expected-statuses = ["2XX", "404", "409"]\n'
        "[[operations]]\n"
        'include-name-regex = "^GET /v1/(proofs/consistency|decisions|stats)$"\n'
        'checks.positive_data_acceptance.expected-statuses = ["2XX", "400"]\n'
    )
    done = subprocess.run(
        [
            st,
            "--config-file",
            str(config),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "-H",
            f"Authorization: Bearer {WRITE}",
            "--max-examples",
            "10",
            "--seed",
            "13",
            "--exclude-path",
            "/v1/stream",  # never ends; tests/test_hostile_http.py drives it
            "--request-timeout",
            "10",
            "--max-time",
            "45",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-6000:]


def test_serve_with_two_worker_processes(root: Path, tmp_path: Path) -> None:
    """rtrace serve --workers 2: both processes write one log; seqs stay whole; it verifies."""
    from reasoning_trace.verify import verify

    port = free_port()
    tokens = tmp_path / "tokens"
    tokens.write_text(f"write:{WRITE}\nread:{READ}\n")
    server = subprocess.Popen(
        [
            shutil.which("rtrace") or "rtrace",
            "--dir",
            str(root),
            "serve",
            "--port",
            str(port),
            "--workers",
            "2",
            "--tokens",
            str(tokens),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(400):
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                threading.Event().wait(0.05)
        with httpx.Client(headers=auth(WRITE), timeout=10) as client:
            seqs = [
                client.post(f"{url}/v1/decisions", json=DECISION).json()["seq"] for _ in range(60)
            ]
        assert sorted(seqs) == list(range(60))
        page = httpx.get(f"{url}/v1/decisions?limit=100", headers=auth(READ)).json()
        assert [d["seq"] for d in page["decisions"]] == list(range(59, -1, -1))
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert verify(root).ok


def test_numbers_beyond_64_bits_are_not_server_errors(server: tuple[str, DecisionLog]) -> None:
    """A huge cursor or seq is a 422 or 404, never a 500 (found by schemathesis)."""
    url, _ = server
    huge = "14588286866143047934017536"
    assert httpx.get(f"{url}/v1/decisions?cursor={huge}", headers=auth(READ)).status_code == 422
    assert httpx.get(f"{url}/v1/decisions/{huge}", headers=auth(READ)).status_code == 404


def test_metrics_serve_what_went_wrong_quietly(
    server: tuple[str, DecisionLog],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A decision the original API could not store (here: an unusable key) is counted, and
    /metrics serves the count."""
    import reasoning_trace

    url, _ = server
    bad = tmp_path / "bad.key"
    bad.write_text("PRIVATE+KEY+garbage")
    monkeypatch.setenv("REASONING_TRACE_KEY", str(bad))
    monkeypatch.setattr(reasoning_trace, "_resolve_trace_dir", lambda: str(tmp_path / "other"))
    try:
        assert reasoning_trace.record_decision("a", True, {}, {}) is False
    finally:
        reasoning_trace.compat._close_all()
    text = httpx.get(f"{url}/metrics", headers=auth(READ)).text
    line = next(x for x in text.splitlines() if 'event="decisions_not_stored"' in x)
    assert float(line.split()[-1]) >= 1


def test_server_front_all_is_sorted_and_complete() -> None:
    """The server package's ``__all__`` is sorted and names what it exposes publicly."""
    import reasoning_trace.server as front

    assert front.__all__ == sorted(front.__all__)
    public = {
        name
        for name, value in vars(front).items()
        if not name.startswith("_")
        and (isinstance(value, type) or callable(value))
        and getattr(value, "__module__", "").startswith("reasoning_trace.server")
    }
    assert public <= set(front.__all__), public - set(front.__all__)
    assert all(getattr(front, name) is not None for name in front.__all__)


def test_the_body_is_documented_by_the_request_model(server: tuple[str, DecisionLog]) -> None:
    """The OpenAPI body of POST /v1/decisions is the shared model, which forbids extra fields;
    an unknown field or a null id is a 422 naming it, as the model says."""
    url, log = server
    document = httpx.get(f"{url}/openapi.json").json()
    body = document["paths"]["/v1/decisions"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    model = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert model["additionalProperties"] is False and model["required"] == ["action", "approved"]
    unknown = httpx.post(f"{url}/v1/decisions", json={**DECISION, "colour": 1}, headers=auth(WRITE))
    assert unknown.status_code == 422 and unknown.json()["path"] == "colour"
    null_id = httpx.post(f"{url}/v1/decisions", json={**DECISION, "id": None}, headers=auth(WRITE))
    assert null_id.status_code == 422 and null_id.json()["path"] == "id"
    assert len(log) == 0


def test_405_allows_every_method_of_the_path(server: tuple[str, DecisionLog]) -> None:
    """A method a path does not have is 405, and Allow names every method it has."""
    url, _ = server
    put = httpx.put(f"{url}/v1/decisions", json=DECISION, headers=auth(WRITE))
    assert put.status_code == 405 and put.headers["allow"] == "GET, POST"
    gone = httpx.delete(f"{url}/v1/decisions/0", headers=auth(WRITE))
    assert gone.status_code == 405 and gone.headers["allow"] == "GET"
