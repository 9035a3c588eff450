"""The dashboard's trust signals in a real browser: the verification badge (checking, verified
with its times and coverage, failed with its findings), the proof of one decision checked in
the browser (VERIFIED, ALTERED, NOT YET SIGNED), a detail panel no late answer overwrites, and
the sign-in for a read token that never goes into a URL."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reasoning_trace import DecisionLog
from reasoning_trace.layout import Layout
from reasoning_trace.server import Tokens
from reasoning_trace.tree import Hash, MemoryHashes, inclusion_proof, tree_hash
from reasoning_trace.verify_incremental import IncrementalVerifier

from .browser import launch, needs_browser, serving, wait_for
from .test_server import DECISION, READ, WRITE

BADGE_OK = "() => document.getElementById('badge').classList.contains('ok')"
BADGE_FAILED = "() => document.getElementById('badge').classList.contains('failed')"


def fill(log: DecisionLog, n: int = 12) -> None:
    """Record ``n`` decisions of three actions, every fourth vetoed by safety."""
    for i in range(n):
        vetoed = i % 4 == 0
        log.record(
            ["upgrade_proposal", "rollback", "halt"][i % 3],
            not vetoed,
            {"safety": {"passed": not vetoed, "reason": "risk" if vetoed else "ok"}},
            {"agent_id": f"agent-{i % 3}", "version": f"1.{i}"},
            f"decision {i}",
        )


def alter(root: Path, old: bytes, new: bytes) -> Path:
    """Change bytes of a record in its day file, in place (same length); return the file."""
    assert len(old) == len(new)
    for day in Layout(root).day_files():
        data = day.read_bytes()
        if old in data:
            day.write_bytes(data.replace(old, new))
            return day
    raise AssertionError(f"{old!r} is in no day file")


@pytest.fixture
def signed(root: Path) -> Iterator[tuple[DecisionLog, str]]:
    """Twelve decisions under a checkpoint, served with a check every half second."""
    log = DecisionLog(str(root), sync="never")
    fill(log)
    log.checkpoint()
    with serving(log) as url:
        yield log, url
    log.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, closed after the test."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        opened = launch(pw)
        yield opened
        opened.close()


def pump(page: Any, what: str, condition: Any, seconds: float = 30.0) -> None:
    """Let the page and Playwright's handlers run until ``condition()`` holds (a deadline)."""
    wait_for(what, lambda: condition() or page.wait_for_timeout(20), seconds)


def text(page: Any, selector: str) -> str:
    """The text an element shows."""
    return str(page.inner_text(selector))


@needs_browser
def test_a_fresh_server_says_checking_then_what_was_verified_and_when(
    root: Path, browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the first verification runs the badge says "checking…" (never "signed through
    seq -1"); then it says verified, that no record is signed yet, when it checked and when
    the full pass ran; once a checkpoint is signed, through which seq."""
    gate = threading.Event()
    full = IncrementalVerifier.full

    def held_full(self: IncrementalVerifier, *args: Any, **kwargs: Any) -> Any:
        gate.wait(60)  # the first check waits until the test has seen the page
        return full(self, *args, **kwargs)

    monkeypatch.setattr(IncrementalVerifier, "full", held_full)
    log = DecisionLog(str(root), sync="never")
    fill(log)
    with serving(log) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/")
        page.wait_for_function(
            "() => document.getElementById('badge-word').textContent === 'checking…'"
        )
        assert "first verification is running" in text(page, "#badge")
        assert "-1" not in text(page, "#badge")
        gate.set()
        page.wait_for_function(BADGE_OK, timeout=10_000)
        badge = text(page, "#badge")
        assert "no record signed yet (12 await the first checkpoint)" in badge
        assert re.search(r"checked \d\d:\d\d:\d\d UTC; last full pass \d\d:\d\d:\d\d UTC", badge)
        log.checkpoint()
        page.wait_for_function(
            "() => document.getElementById('badge').textContent"
            ".includes('signed through seq 11 (checkpoint of 12)')",
            timeout=10_000,
        )
        page.click("#badge")
        summary = text(page, "#verification-summary")
        assert re.search(r"the records from seq \d+ on and the checkpoints signed since", summary)
        page.close()
    log.close()


@needs_browser
def test_an_altered_record_turns_the_badge_red_with_its_findings(
    signed: tuple[DecisionLog, str], browser: Any
) -> None:
    """A byte changed on disk turns the badge red within a few checks (every half second),
    and the findings it opens name the kind, the file and line, and the seq."""
    log, url = signed
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/")
    page.wait_for_function(BADGE_OK, timeout=10_000)
    assert page.is_hidden("#verification")
    day = alter(log.root, b'"reason":"decision 5"', b'"reason":"decision X"')
    page.wait_for_function(BADGE_FAILED, timeout=5_000)
    assert "verification FAILED" in text(page, "#badge")
    page.wait_for_selector("#verification", state="visible")
    rows = [[c.strip() for c in r.split("\t")] for r in text(page, "#findings tbody").splitlines()]
    assert ["altered", f"{day}:6, seq 5"] in [r[:2] for r in rows], rows
    assert any(r[0] == "checkpoint_mismatch" for r in rows)
    page.click("#verification-close")
    assert page.is_hidden("#verification")
    page.click("#badge")
    assert page.is_visible("#findings")


@needs_browser
def test_the_browser_checks_each_decisions_proof_itself(
    signed: tuple[DecisionLog, str], browser: Any
) -> None:
    """The detail panel recomputes the leaf and the path to the root of the checkpoint the
    badge verified: VERIFIED for an untouched record, NOT YET SIGNED for one recorded after
    the checkpoint, ALTERED once a byte of it changed on disk; the panel closes."""
    log, url = signed
    fresh = log.record("halt", False, {"safety": {"passed": False}}, {"agent_id": "a9"}, "new")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{url}/")
    page.wait_for_function(BADGE_OK, timeout=10_000)

    def status(seq: int) -> str:
        page.click(f'#feed tbody tr[data-seq="{seq}"]')
        page.wait_for_function(
            "s => document.getElementById('detail-title').textContent.startsWith(`#${s} `)"
            " && document.getElementById('detail-proof').dataset.status",
            arg=seq,
        )
        return text(page, "#detail-proof")

    verified = status(3)
    assert verified.startswith("VERIFIED — this browser hashed its stored bytes")
    assert "to the root of the checkpoint of 12 records" in verified
    assert any("/v1/decisions/3?proof=true&size=12" in u for u in requests)
    assert status(fresh.seq).startswith("NOT YET SIGNED")
    alter(log.root, b'"reason":"decision 5"', b'"reason":"decision X"')
    altered = status(5)
    assert altered.startswith("ALTERED — its stored bytes do not hash to the root")
    assert status(3).startswith("VERIFIED")  # its neighbours still prove it
    page.click("#detail-close")
    assert page.is_hidden("#detail")


@needs_browser
def test_a_late_answer_never_overwrites_the_detail_panel(
    signed: tuple[DecisionLog, str], browser: Any
) -> None:
    """The answer for a row clicked before another arrives after the other's: the panel
    keeps showing the row clicked last."""
    _, url = signed
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/")
    page.wait_for_function(BADGE_OK, timeout=10_000)
    held: list[Any] = []
    ended: list[str] = []  # the held request, once answered or given up by the page
    late = re.compile(r"/v1/decisions/3\?")
    page.route(late, lambda route: held.append(route))
    page.on("requestfinished", lambda r: late.search(r.url) and ended.append("answered"))
    page.on("requestfailed", lambda r: late.search(r.url) and ended.append("given up"))
    page.evaluate(
        """() => {
          window.titles = [];
          const t = document.getElementById('detail-title');
          new MutationObserver(() => window.titles.push(t.textContent))
            .observe(t, {childList: true, characterData: true, subtree: true});
        }"""
    )
    page.click('#feed tbody tr[data-seq="3"]')
    pump(page, "the request for #3 held", lambda: held)
    page.click('#feed tbody tr[data-seq="7"]')
    page.wait_for_function(
        "() => document.getElementById('detail-proof').dataset.status === 'VERIFIED'"
    )
    shown = page.evaluate("() => window.titles.length")
    held[0].continue_()  # the answer for #3 comes now, late (unless the page dropped it)
    pump(page, "the answer for #3 arrived or was dropped", lambda: ended)
    page.evaluate("() => new Promise(r => setTimeout(() => requestAnimationFrame(r), 50))")
    assert text(page, "#detail-title").startswith("#7 ")
    assert page.evaluate("() => window.titles")[shown:] == []


@needs_browser
def test_sign_in_with_a_read_token_kept_out_of_urls(root: Path, browser: Any) -> None:
    """A server with tokens: the page asks for a read token (401), says when one is not
    accepted, shows the live feed once given one, never puts it in a URL, keeps it for the
    tab only; and a read token cannot write."""
    log = DecisionLog(str(root), sync="never")
    fill(log)
    with serving(log, Tokens([f"read:{READ}", f"write:{WRITE}"])) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        urls: list[str] = []
        page.on("request", lambda r: urls.append(r.url))
        page.goto(f"{url}/")
        page.wait_for_selector("#signin", state="visible")
        assert "needs a read token" in text(page, "#signin-message")
        assert text(page, "#live") == "sign-in needed"
        page.fill("#signin-token", "not-a-token")
        page.click("#signin button[type=submit]")
        page.wait_for_function(
            "() => document.getElementById('signin-message').textContent.includes('not accepted')"
        )
        page.fill("#signin-token", READ)
        page.press("#signin-token", "Enter")
        page.wait_for_selector('#feed tbody tr[data-seq="11"]')
        page.wait_for_function("() => document.getElementById('live').textContent === 'live'")
        page.mouse.move(1, 1)  # off the feed, which holds new rows back while pointed at
        made = httpx.post(
            f"{url}/v1/decisions", json=DECISION, headers={"Authorization": f"Bearer {WRITE}"}
        ).json()
        page.wait_for_selector(f'#feed tbody tr[data-seq="{made["seq"]}"]')
        assert page.is_hidden("#signin")
        assert not any(READ in u or "access_token" in u for u in urls), urls
        assert page.evaluate("() => sessionStorage.length") == 1
        refused = page.evaluate(
            """async token => {
              const r = await fetch('/v1/decisions', {method: 'POST',
                headers: {'Authorization': `Bearer ${token}`, 'Content-Type': 'application/json'},
                body: JSON.stringify({action: 'x', approved: true, votes: {}, subject: {}})});
              return [r.status, (await r.json()).detail];
            }""",
            READ,
        )
        assert refused == [403, "this token may only read"]
        other = browser.new_context().new_page()  # another session: asked again
        other.goto(f"{url}/")
        other.wait_for_selector("#signin", state="visible")
        page.click("#signout")
        page.wait_for_selector("#signin", state="visible")
        context.close()
    log.close()


@needs_browser
def test_sha256_in_the_browser_with_and_without_webcrypto(
    signed: tuple[DecisionLog, str], browser: Any
) -> None:
    """The page's SHA-256 written out (for pages without WebCrypto: not a secure context)
    gives WebCrypto's digests and Python's, across block boundaries and for UTF-8 text."""
    _, url = signed
    page = browser.new_page()
    page.goto(f"{url}/")
    lengths = [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 70_000]
    got = page.evaluate(
        """async lengths => {
          const { sha256, sha256Sync } = await import('/static/sha256.js');
          const hex = b => [...b].map(x => x.toString(16).padStart(2, '0')).join('');
          const out = [];
          for (const n of lengths) {
            const data = Uint8Array.from({length: n}, (_, i) => (i * 31 + 7) % 256);
            out.push([hex(sha256Sync(data)), hex(await sha256(data))]);
          }
          const text = new TextEncoder().encode('décision ✓ 決定');
          out.push([hex(sha256Sync(text)), hex(await sha256(text))]);
          return out;
        }""",
        lengths,
    )
    inputs = [bytes((i * 31 + 7) % 256 for i in range(n)) for n in lengths]
    inputs.append("décision ✓ 決定".encode())
    assert got == [[hashlib.sha256(b).hexdigest()] * 2 for b in inputs]


@needs_browser
def test_the_browsers_proof_check_agrees_with_the_library(
    signed: tuple[DecisionLog, str], browser: Any
) -> None:
    """For every leaf of every tree of 1 to 33 records, the page's proof check accepts the
    library's inclusion proof for the record's line and refuses it for another line."""
    _, url = signed
    cases = []
    for size in range(1, 34):
        hashes = MemoryHashes()
        lines = [f'{{"n":{i},"s":"é"}}' for i in range(size)]
        for line in lines:
            hashes.add_leaf(line.encode())
        root = str(Hash(tree_hash(size, hashes)))
        for seq in range(size):
            path = [str(Hash(h)) for h in inclusion_proof(seq, size, hashes)]
            case = {"seq": str(seq), "size": str(size), "path": path, "root": root}
            cases.append({**case, "line": lines[seq], "other": lines[(seq + 1) % size]})
    page = browser.new_page()
    page.goto(f"{url}/")
    verdicts = page.evaluate(
        """async cases => {
          const { checkInclusion } = await import('/static/proof.js');
          const out = [];
          for (const c of cases) {
            const right = await checkInclusion(c);
            const wrong = await checkInclusion({...c, line: c.other});
            out.push([right.ok, wrong.ok]);
          }
          return out;
        }""",
        cases,
    )
    assert verdicts == [[True, c["size"] == "1"] for c in cases]
