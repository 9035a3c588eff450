"""The dashboard in a real browser (Playwright driving Debian's Chromium, headless): the live
feed, filters that apply to the feed, the totals and the charts, search, a subject's history,
a feed that holds still while read, numbers exactly as stored, and a layout that fits 1400
and 420 pixels (screenshots in tests/artifacts/)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reasoning_trace import DecisionLog

from .browser import ARTIFACTS, feed_seqs, launch, needs_browser, serving

DAY_NS = 86_400 * 10**9
LIVE = "() => document.getElementById('live').textContent === 'live'"
BADGE_OK = "() => document.getElementById('badge').classList.contains('ok')"
OVERFLOW = """() => {
  const width = window.innerWidth;
  const past = [...document.querySelectorAll('body *')].filter(e => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && r.right > width + 0.5;
  }).map(e => `${e.tagName.toLowerCase()}#${e.id}.${e.className}`);
  return {scroll: document.documentElement.scrollWidth, width, past};
}"""


def fill(log: DecisionLog, n: int, start: int = 0) -> None:
    """Record ``n`` decisions of three actions, every fourth vetoed by safety."""
    for i in range(start, start + n):
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


@pytest.fixture
def site(root: Path) -> Iterator[tuple[str, DecisionLog]]:
    """Six decisions from three days ago, then twelve of today, signed, on a real server."""
    with DecisionLog(str(root), sync="never", clock=lambda: time.time_ns() - 3 * DAY_NS) as old:
        for _ in range(6):
            old.record("audit", True, {"safety": {"passed": True}}, {"agent_id": "agent-old"})
    log = DecisionLog(str(root), sync="never")
    fill(log, 12)
    log.checkpoint()
    with serving(log) as url:
        yield url, log
    log.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, closed after the test."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        opened = launch(pw)
        yield opened
        opened.close()


def stats(page: Any) -> str:
    """The totals line."""
    return str(page.inner_text("#stats"))


def shows(page: Any, selector: str, count: int) -> None:
    """Wait until the page has ``count`` elements matching ``selector`` (the totals, the feed
    and the charts are drawn one after the other: a test waits for each it reads)."""
    page.wait_for_function(
        "([s, n]) => document.querySelectorAll(s).length === n", arg=[selector, count]
    )


def feed_has(page: Any, count: int) -> None:
    """Wait until the feed shows ``count`` rows."""
    shows(page, "#feed tbody tr", count)


def rows_all(page: Any, column: int, value: str) -> None:
    """Wait until every row of the feed has ``value`` in ``column`` (and there is one)."""
    page.wait_for_function(
        """([column, value]) => {
          const rows = [...document.querySelectorAll('#feed tbody tr')];
          return rows.length > 0 && rows.every(r => r.children[column].textContent.includes(value));
        }""",
        arg=[column, value],
    )


@needs_browser
def test_live_feed_filters_search_and_history(site: tuple[str, DecisionLog], browser: Any) -> None:
    """The feed loads, a posted decision appears within 2 s; the action filter and the time
    range narrow the feed, the totals and the charts alike; a search by id opens that
    decision, by subject value shows that subject's history, as does one click in the
    detail panel; nothing fails to load."""
    url, _ = site
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.goto(f"{url}/")
    page.wait_for_function(LIVE)
    assert feed_seqs(page) == list(range(17, -1, -1))
    page.wait_for_function("() => document.getElementById('stats').textContent.includes('18')")
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
    page.wait_for_selector(row, timeout=2_000)
    assert "REJECTED" in page.inner_text(row)

    page.wait_for_selector('#filter-action option[value="halt"]', state="attached")
    page.select_option("#filter-action", "halt")
    rows_all(page, 2, "halt")
    feed_has(page, 4)
    page.wait_for_function("() => document.getElementById('stats').textContent.startsWith('4 ')")
    shows(page, "#chart-actions .label", 1)
    labels = page.eval_on_selector_all(
        "#chart-actions .label", "els => els.map(e => e.textContent)"
    )
    assert labels == ["halt"]
    page.select_option("#filter-action", "")
    page.select_option("#filter-since", "24h")  # the audit decisions are three days old
    page.wait_for_function("() => document.getElementById('stats').textContent.startsWith('13 ')")
    feed_has(page, 13)  # the totals and the feed are drawn one after the other
    assert min(feed_seqs(page)) == 6
    shows(page, "#chart-days .col", 1)
    page.select_option("#filter-since", "")
    page.wait_for_function("() => document.getElementById('stats').textContent.startsWith('19 ')")
    shows(page, "#chart-days .col", 4)  # three days ago to today, the days between empty

    page.fill("#search-input", made["id"])
    page.press("#search-input", "Enter")
    page.wait_for_function(
        "s => document.getElementById('detail-title').textContent.startsWith(`#${s} `)",
        arg=made["seq"],
    )
    detail = page.inner_text("#detail")
    assert "safety" in detail and "FAIL" in detail and "eval regression" in detail

    page.fill("#search-input", "agent-2")
    page.press("#search-input", "Enter")
    page.wait_for_function(
        "() => document.getElementById('subject-filter-text').textContent === 'agent_id=agent-2'"
    )
    rows_all(page, 5, "agent_id=agent-2")
    assert len(feed_seqs(page)) == 4
    page.wait_for_function("() => document.getElementById('stats').textContent.startsWith('4 ')")
    page.click("#subject-clear")
    page.wait_for_function("() => document.querySelectorAll('#feed tbody tr').length === 19")

    page.click('#feed tbody tr[data-seq="7"]')
    page.wait_for_selector("#detail-subject tbody tr")
    page.click("#detail-subject tbody tr:first-child button")  # agent_id=agent-1: history
    rows_all(page, 5, "agent_id=agent-1")
    assert feed_seqs(page) == [16, 13, 10, 7]
    page.wait_for_function(BADGE_OK, timeout=10_000)
    for chart in ("#chart-days .col", "#chart-actions li", "#chart-voters li"):
        assert page.query_selector(chart) is not None, chart
    assert problems == []


@needs_browser
def test_the_feed_holds_still_while_read(site: tuple[str, DecisionLog], browser: Any) -> None:
    """New decisions wait in an "N new" bar while the reader points at the feed or has
    scrolled down in it; they appear when the reader leaves, returns to the top, or clicks
    the bar."""
    url, log = site
    fill(log, 60, 12)
    page = browser.new_page(viewport={"width": 1400, "height": 700})
    page.goto(f"{url}/")
    page.wait_for_function(LIVE)
    top = feed_seqs(page)[0]
    page.hover('#feed tbody tr[data-seq="70"]')
    fill(log, 3, 72)
    waiting(page, 3)
    assert feed_seqs(page)[0] == top
    page.mouse.move(1, 1)
    newest(page, top + 3)
    assert page.is_hidden("#new-bar")

    page.eval_on_selector("#feed-box", "box => { box.scrollTop = 400; }")
    fill(log, 2, 75)
    waiting(page, 2)
    assert feed_seqs(page)[0] == top + 3
    page.eval_on_selector("#feed-box", "box => { box.scrollTop = 0; }")
    newest(page, top + 5)

    page.hover("#feed tbody tr:nth-child(3)")
    fill(log, 1, 77)
    waiting(page, 1)
    page.click("#new-bar")
    newest(page, top + 6)
    assert len(feed_seqs(page)) == len(set(feed_seqs(page)))


def waiting(page: Any, n: int) -> None:
    """Wait until the bar says ``n`` new decisions wait."""
    page.wait_for_function(
        "n => document.getElementById('new-bar').textContent === `${n} new — show`", arg=n
    )


def newest(page: Any, seq: int) -> None:
    """Wait until the feed's top row is ``seq``."""
    page.wait_for_function(
        "s => document.querySelector('#feed tbody tr').dataset.seq === String(s)", arg=seq
    )


@needs_browser
def test_numbers_are_shown_exactly_as_stored(root: Path, browser: Any) -> None:
    """A number JavaScript would round (a 20-digit integer, a decimal with 22 digits, an
    integer of 30 digits in a line the original module wrote) is shown as stored: in the
    feed, live, and in the detail panel, whose stored line is the line on disk."""
    root.mkdir()
    when = time.time() - 60
    legacy = {
        "timestamp": when,
        "datetime_utc": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(when)),
        "action": "upgrade_proposal",
        "approved": True,
        "votes": {"safety": {"passed": True, "reason": "ok"}},
        "subject": {"agent_id": "agent-7", "version": 123456789012345678901234567890},
        "reason": "written by the original module",
    }
    line = json.dumps(legacy).replace(
        '"version": 123', '"confidence": 0.1000000000000000000001, "version": 123'
    )
    (root / f"{legacy['datetime_utc'][:10]}.jsonl").write_text(line + "\n")
    log = DecisionLog(str(root), sync="never")
    log.record("gate", True, {}, {"agent_id": "agent-8", "version": 12345678901234567890}, "big")
    log.checkpoint()
    with serving(log) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/")
        page.wait_for_function(LIVE)
        subjects = page.eval_on_selector_all(
            "#feed tbody td.subject", "els => els.map(e => e.textContent)"
        )
        assert subjects == [
            "agent_id=agent-8version=12345678901234567890",
            "agent_id=agent-7version=123456789012345678901234567890",
        ]
        log.record("gate", False, {}, {"agent_id": "agent-9", "version": -9223372036854775807})
        page.wait_for_selector('#feed tbody tr[data-seq="2"]')
        assert "version=-9223372036854775807" in page.inner_text('#feed tbody tr[data-seq="2"]')
        page.wait_for_function(BADGE_OK, timeout=10_000)
        page.click('#feed tbody tr[data-seq="0"]')
        page.wait_for_function(
            "() => document.getElementById('detail-proof').dataset.status === 'VERIFIED'"
        )
        values = page.eval_on_selector_all(
            "#detail-subject tbody tr", "rows => rows.map(r => r.children[1].textContent)"
        )
        assert values == ["agent-7", "0.1000000000000000000001", "123456789012345678901234567890"]
        assert page.eval_on_selector("#detail-line", "e => e.textContent") == line
        page.close()
    log.close()


@needs_browser
def test_the_feed_paints_before_the_totals_and_charts(
    site: tuple[str, DecisionLog], browser: Any
) -> None:
    """The newest decisions show while the totals and charts are still being fetched, and
    the page loads nothing but its own few small files."""
    url, _ = site
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    held: list[Any] = []
    page.route("**/v1/stats*", lambda route: held.append(route))
    loaded: list[Any] = []
    page.on("requestfinished", lambda r: loaded.append(r))
    page.goto(f"{url}/")
    page.wait_for_function(LIVE)
    assert feed_seqs(page)[0] == 17 and held
    assert page.inner_text("#stats") == ""
    for route in held:
        route.continue_()
    page.wait_for_function("() => document.getElementById('stats').textContent !== ''")
    statics = [r for r in loaded if "/static/" in r.url]
    assert all(r.url.startswith(url) for r in loaded)
    assert sum(r.sizes()["responseBodySize"] for r in statics) < 100_000


@needs_browser
def test_layout_at_1400_and_420_pixels(site: tuple[str, DecisionLog], browser: Any) -> None:
    """At 1400 x 1000 the charts stand side by side; at 420 x 900 they stack, nothing is
    wider than the window (the page, the feed, the open detail and verification panels),
    and the table does not scroll sideways. Screenshots go to tests/artifacts/."""
    url, log = site
    log.record(
        "upgrade_proposal",
        False,
        {"a-voter-with-a-very-long-name-" * 3: {"passed": False, "reason": "x" * 300}},
        {"agent_id": "agent-" + "9" * 80, "version": "1.0"},
        "an unbroken reason " + "y" * 200,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    for width, height in ((1400, 1000), (420, 900)):
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(f"{url}/")
        page.wait_for_function(LIVE)
        page.wait_for_function(BADGE_OK, timeout=10_000)
        page.wait_for_selector("#chart-voters li")
        tops = page.eval_on_selector_all(
            ".charts .chart", "els => els.map(e => Math.round(e.getBoundingClientRect().top))"
        )
        assert (len(set(tops)) == 1) if width == 1400 else (tops == sorted(set(tops)))
        page.screenshot(path=str(ARTIFACTS / f"dashboard-{width}.png"), full_page=width > 1000)
        fit = page.evaluate(OVERFLOW)
        assert fit["scroll"] <= fit["width"] and fit["past"] == [], fit
        box = page.eval_on_selector("#feed-box", "b => [b.scrollWidth, b.clientWidth]")
        assert box[0] <= box[1]
        page.click('#feed tbody tr[data-seq="18"] td.c-seq')  # not its subject's button
        page.wait_for_function(
            "() => document.getElementById('detail-proof').dataset.status === 'NOT YET SIGNED'"
        )
        page.screenshot(path=str(ARTIFACTS / f"dashboard-{width}-detail.png"))
        fit = page.evaluate(OVERFLOW)
        assert fit["scroll"] <= fit["width"] and fit["past"] == [], fit
        page.click("#detail-close")
        page.click("#badge")
        page.wait_for_selector("#verification", state="visible")
        fit = page.evaluate(OVERFLOW)
        assert fit["scroll"] <= fit["width"] and fit["past"] == [], fit
        page.close()
