"""The live feed in a real browser never loses or repeats a decision: 20 page loads while a
writer records 100 decisions a second, with the connection cut under the page every fifth
load (and held down while records land). What is checked is what the page shows."""

from __future__ import annotations

import threading
from pathlib import Path

from reasoning_trace import DecisionLog

from .browser import Proxy, feed_seqs, launch, needs_browser, serving, stream_requests, wait_for

WATCH_LIVE = """() => {
  window.liveSaid = [];
  const live = document.getElementById('live');
  new MutationObserver(() => window.liveSaid.push(live.textContent))
    .observe(live, {childList: true, characterData: true, subtree: true});
}"""
# A MutationObserver records what the status line said: the DOM's own history.


def writer(log: DecisionLog, stop: threading.Event, per_second: float = 100.0) -> None:
    """Record decisions at ``per_second`` until ``stop`` is set."""
    i = 0
    while not stop.wait(1 / per_second):
        log.record(
            "gate",
            i % 7 != 0,
            {"safety": {"passed": i % 7 != 0, "reason": "load"}},
            {"agent_id": f"agent-{i % 9}", "n": i},
            "from the writer",
        )
        i += 1


def assert_whole(seqs: list[int], through: int) -> None:
    """The feed shows one unbroken run of seqs, newest first, each once, up to ``through``."""
    assert len(seqs) == len(set(seqs)), "a seq shown twice"
    assert seqs == list(range(seqs[0], seqs[0] - len(seqs), -1)), "a seq missing or out of order"
    assert seqs[0] >= through


@needs_browser
def test_every_seq_once_across_page_loads_and_cut_connections(root: Path) -> None:
    """20 page loads against a log growing by 100 decisions a second: each shows every seq
    from its first page to a seq recorded after it went live, once each, in order; every
    fifth load the connection is cut and held down while about 100 records land, and the
    page says it is reconnecting, then catching up, resumes with Last-Event-ID, and still
    shows every seq once."""
    from playwright.sync_api import sync_playwright

    log = DecisionLog(str(root), sync="never")
    for i in range(300):
        log.record("gate", True, {}, {"n": -i}, "before the page")
    stop = threading.Event()
    thread = threading.Thread(target=writer, args=(log, stop), daemon=True)
    with serving(log, verify_every=0) as url:
        proxy = Proxy(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        thread.start()
        try:
            with sync_playwright() as pw:
                browser = launch(pw)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                for load in range(20):
                    page.goto(f"{proxy.url}/")
                    page.evaluate(WATCH_LIVE)
                    page.wait_for_function(
                        "() => document.getElementById('live').textContent === 'live'"
                    )
                    if load % 5 == 4:
                        streams = len(stream_requests(proxy))
                        proxy.held = True
                        proxy.cut()
                        page.wait_for_function(
                            "() => document.getElementById('live').textContent"
                            ".startsWith('connection lost')"
                        )
                        size = len(log)
                        wait_for(
                            "100 records while cut off",
                            lambda size=size: len(log) >= size + 100,
                        )
                        proxy.held = False
                        resumed = wait_for(
                            "a resumed stream",
                            lambda streams=streams: stream_requests(proxy)[streams:],
                        )
                        assert b"last-event-id: " in resumed[-1].lower()
                        page.wait_for_function(
                            "() => document.getElementById('live').textContent === 'live'"
                        )
                        said = page.evaluate("() => window.liveSaid")
                        assert any(s.startswith("catching up") for s in said), said
                    through = len(log) - 1  # recorded after the page went live
                    page.wait_for_function(
                        "t => Number(document.querySelector('#feed tbody tr').dataset.seq) >= t",
                        arg=through,
                    )
                    assert_whole(feed_seqs(page), through)
                browser.close()
                assert errors == []
        finally:
            stop.set()
            thread.join(timeout=10)
            proxy.close()
    log.close()
