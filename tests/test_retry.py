"""The one backoff rule (``retry.py``): waits that double up to a ceiling, only what is worth
retrying retried, the ways to give up, a wait that a stop request cuts short, and a first try
made outside the retrier."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import pytest
import tenacity

from reasoning_trace.retry import async_retrying, retrying


class Flaky:
    """Raises ``exc`` on the first ``failures`` calls, then returns the number of calls."""

    def __init__(self, failures: int, exc: type[Exception] = TimeoutError) -> None:
        self.failures = failures
        self.exc = exc
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc(f"try {self.calls}")
        return self.calls


def test_waits_double_from_first_up_to_most() -> None:
    """Five failures wait 1, 2, 4, 5, 5 (first 1, most 5), through the sleep hook."""
    slept: list[float] = []
    flaky = Flaky(5)
    for attempt in retrying(first=1.0, most=5.0, sleep=slept.append):
        with attempt:
            result = flaky()
    assert result == 6
    assert slept == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_only_what_retry_on_accepts_is_retried() -> None:
    """An exception ``retry_on`` refuses propagates at once, after one try."""
    flaky = Flaky(3, ValueError)
    with pytest.raises(ValueError, match="try 1"):
        for attempt in retrying(
            first=0.0, most=0.0, retry_on=lambda e: isinstance(e, TimeoutError)
        ):
            with attempt:
                flaky()
    assert flaky.calls == 1


def test_giving_up_raises_the_last_exception_itself() -> None:
    """After ``attempts`` tries, or once ``within`` seconds passed, or when ``stop()`` says
    so, the last exception is raised (not tenacity's RetryError)."""
    flaky = Flaky(10)
    with pytest.raises(TimeoutError, match="try 3"):
        for attempt in retrying(first=0.0, most=0.0, attempts=3):
            with attempt:
                flaky()

    flaky = Flaky(10)
    with pytest.raises(TimeoutError, match="try 1"):
        for attempt in retrying(first=0.0, most=0.0, within=0.0):
            with attempt:
                flaky()

    flaky = Flaky(10)
    with pytest.raises(TimeoutError, match="try 4"):
        for attempt in retrying(first=0.0, most=0.0, stop=lambda: flaky.calls >= 4):
            with attempt:
                flaky()


def test_an_event_wait_is_cut_short_by_the_stop_request() -> None:
    """With ``sleep=event.wait``, a long backoff ends as soon as the event is set."""
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    flaky = Flaky(10)
    began = time.monotonic()
    for attempt in retrying(first=60.0, most=60.0, sleep=stop.wait):
        if stop.is_set():
            break
        with attempt:
            flaky()
    assert flaky.calls == 1
    assert time.monotonic() - began < 30


def test_a_first_try_made_outside_counts_as_the_first() -> None:
    """``failed``: the waits are those of a retrier that made the first try itself, and the
    loop makes only the tries after it."""
    slept: list[float] = []
    flaky = Flaky(3)
    try:
        flaky()
    except TimeoutError as exc:
        failed = exc
    for attempt in retrying(first=1.0, most=8.0, sleep=slept.append, failed=failed):
        with attempt:
            result = flaky()
    assert result == 4
    assert slept == [1.0, 2.0, 4.0]

    refused = ValueError("no")  # a first failure not worth retrying is raised again
    with pytest.raises(ValueError, match="no"):
        for attempt in retrying(
            first=0.0,
            most=0.0,
            retry_on=lambda e: isinstance(e, TimeoutError),
            failed=refused,
        ):
            with attempt:
                pytest.fail("no try after a failure that is not retried")


def test_async_retrying_waits_as_the_synchronous_one() -> None:
    """The async retrier has the same waits, the same giving up, and hears of each retry."""
    heard: list[float] = []

    def note(state: tenacity.RetryCallState) -> None:
        assert state.next_action is not None
        heard.append(state.next_action.sleep)

    async def run() -> int:
        """Four failures, then an answer."""
        flaky = Flaky(4)
        async for attempt in async_retrying(first=0.001, most=0.004, before_sleep=note):
            with attempt:
                result = flaky()
        return result

    assert asyncio.run(run()) == 5
    assert heard == [0.001, 0.002, 0.004, 0.004]

    async def give_up() -> None:
        """Two tries, both failing."""
        flaky = Flaky(10)
        async for attempt in async_retrying(first=0.0, most=0.0, attempts=2):
            with attempt:
                flaky()

    with pytest.raises(TimeoutError, match="try 2"):
        asyncio.run(give_up())


def test_the_package_imports_without_tenacity() -> None:
    """``import reasoning_trace`` does not import tenacity: retriers import it when built."""
    code = "import sys, reasoning_trace; assert 'tenacity' not in sys.modules, 'imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
