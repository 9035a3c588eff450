"""The dashboard in a real browser: Playwright driving Debian's Chromium, headless."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from reasoning_trace import DecisionLog
from reasoning_trace.server import create_app

from .test_server import free_port

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


@pytest.fixture
def site(root: Path) -> Iterator[tuple[str, DecisionLog]]:
    """The server without tokens on loopback, verifying every second, with some decisions."""
    log = DecisionLog(str(root), sync="never")
    for i in range(12):
        vetoed = i % 4 == 0
        log.record(
            ["upgrade_proposal", "rollback", "halt"][i % 3],
            not vetoed,
            {
                "safety": {"passed": not vetoed, "reason": "risk" if vetoed else "ok"},
                "cost": {"passed": True, "reason": "fine"},
            },
            {"agent_id": f"agent-{i % 3}", "version": f"1.{i}"},
            f"decision {i}",
        )
    log.checkpoint()
    app = create_app(log, verify_every=1)
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started and thread.is_alive():
        threading.Event().wait(0.01)
    yield f"http://127.0.0.1:{config.port}", log
    srv.should_exit = True
    thread.join(timeout=10)
    log.close()


@needs_browser
def test_dashboard_live_feed_filters_detail_charts(site: tuple[str, DecisionLog]) -> None:
    """The page loads; a posted decision appears live within 2 s; filters narrow the feed;
    the detail view shows the votes; the charts and the verification badge render."""
    from playwright.sync_api import sync_playwright

    url, _ = site
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{url}/")
        page.wait_for_selector('#feed tbody tr[data-seq="11"]', timeout=10_000)
        page.wait_for_function("document.getElementById('live').textContent === 'live'")
        made = httpx.post(
            f"{url}/v1/decisions",
            json={
                "action": "model_promotion",
                "approved": False,
                "reason": "posted by the test",
                "votes": {"safety": {"passed": False, "reason": "eval regression"}},
                "subject": {"agent_id": "agent-9", "version": "2.0"},
            },
        ).json()
        row = f'#feed tbody tr[data-seq="{made["seq"]}"]'
        page.wait_for_selector(row, timeout=2_000)  # live, within 2 s
        assert "REJECTED" in page.inner_text(row)

        page.wait_for_selector('#filter-action option[value="halt"]', state="attached")
        page.select_option("#filter-action", "halt")
        page.wait_for_function(
            "[...document.querySelectorAll('#feed tbody tr')].every("
            "r => r.children[2].textContent === 'halt')"
            " && document.querySelectorAll('#feed tbody tr').length === 4"
        )
        page.select_option("#filter-action", "")
        page.wait_for_selector(row)

        page.click(row)
        page.wait_for_selector("#detail-votes tbody tr")
        detail = page.inner_text("#detail")
        assert "safety" in detail and "FAIL" in detail and "eval regression" in detail

        for chart in ("#chart-days", "#chart-actions", "#chart-voters"):
            page.wait_for_selector(f"{chart} .main-svg", timeout=5_000)
        page.wait_for_function(
            "document.getElementById('badge').classList.contains('ok')", timeout=10_000
        )
        assert "verified" in page.inner_text("#badge")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        browser.close()
    assert errors == []


@needs_browser
def test_the_detail_panel_says_altered_for_bytes_changed_on_disk(
    site: tuple[str, DecisionLog],
) -> None:
    """The detail panel says signed for an untouched decision and ALTERED once its bytes were
    changed on disk (the server proves the stored bytes against the signed checkpoint)."""
    from playwright.sync_api import sync_playwright

    url, log = site
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/")
        page.wait_for_selector('#feed tbody tr[data-seq="3"]', timeout=10_000)
        page.click('#feed tbody tr[data-seq="3"]')
        page.wait_for_function("document.getElementById('detail-signed').textContent !== ''")
        assert page.inner_text("#detail-signed").startswith("signed")
        day = sorted(log.root.glob("*.jsonl"))[-1]
        day.write_bytes(
            day.read_bytes().replace(b'"reason":"decision 5"', b'"reason":"decision X"')
        )
        # Each answer is awaited before the next click, so the panel speaks of the row
        # clicked last (a late answer for another row never stands in for it).
        page.evaluate("document.getElementById('detail-signed').textContent = ''")
        page.click('#feed tbody tr[data-seq="3"]')  # neighbours still prove through stored hashes
        page.wait_for_function("document.getElementById('detail-signed').textContent !== ''")
        page.evaluate("document.getElementById('detail-signed').textContent = ''")
        page.click('#feed tbody tr[data-seq="5"]')
        page.wait_for_function(
            "document.getElementById('detail-title').textContent.startsWith('#5 ')"
            " && document.getElementById('detail-signed').textContent !== ''"
        )
        assert page.inner_text("#detail-signed").startswith("ALTERED")
        browser.close()
