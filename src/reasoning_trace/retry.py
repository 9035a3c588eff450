"""Retrying with exponential backoff: how every loop that rides out an outage (a NATS server
away, a JetStream election) or a failing subscriber waits between tries, built on tenacity.

``retrying`` (synchronous) and ``async_retrying`` build tenacity retriers with one rule: the
waits start at ``first`` seconds and double up to ``most``; only exceptions ``retry_on``
accepts are retried (any other propagates at once); tries stop when ``stop()`` is true,
``within`` seconds after the first try began, or after ``attempts`` tries, and then the last
exception is raised again (never tenacity's ``RetryError``). ``sleep`` replaces the wait: a
``threading.Event``'s ``wait`` makes a wait that a stop request cuts short. ``before_sleep``
hears of each failed try that is retried.

tenacity is imported when a retrier is built, not with the package, so ``import
reasoning_trace`` does not pay for it. A hot path tries once with a plain call and builds a
retrier only after that failed, handing it the failure (``failed``): it counts as the first
try, so the waits are the same as if the retrier had made it (tenacity's bookkeeping costs
about 20 µs a call, several times what delivering an event costs).
Tests: ``tests/test_retry.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Required, TypedDict, Unpack

if TYPE_CHECKING:
    import tenacity

__all__ = ["Backoff", "async_retrying", "backoff_wait", "retrying"]


def _any(exc: BaseException) -> bool:
    return isinstance(exc, Exception)


class Backoff(TypedDict, total=False):
    """The one rule of every retrier (see the module docstring): waits from ``first`` to
    ``most`` seconds; what is retried (``retry_on``); when to give up (``stop``, ``within``,
    ``attempts``); who hears of each retried failure (``before_sleep``)."""

    first: Required[float]
    most: Required[float]
    retry_on: Callable[[BaseException], bool]
    stop: Callable[[], bool] | None
    within: float | None
    attempts: int | None
    before_sleep: Callable[[tenacity.RetryCallState], None] | None


def _options(rule: Backoff) -> dict[str, Any]:
    """The tenacity settings of ``rule``."""
    import tenacity

    stop, within, attempts = rule.get("stop"), rule.get("within"), rule.get("attempts")

    def give_up(state: tenacity.RetryCallState) -> bool:
        return bool(
            (stop is not None and stop())
            or (within is not None and (state.seconds_since_start or 0.0) >= within)
            or (attempts is not None and state.attempt_number >= attempts)
        )

    return {
        "retry": tenacity.retry_if_exception(rule.get("retry_on", _any)),
        "wait": tenacity.wait_exponential(multiplier=rule["first"], max=rule["most"]),
        "stop": give_up,
        "before_sleep": rule.get("before_sleep"),
        "reraise": True,
    }


def retrying(
    *,
    sleep: Callable[[float], object] | None = None,
    failed: BaseException | None = None,
    **rule: Unpack[Backoff],
) -> Iterable[tenacity.AttemptManager]:
    """Tries to make in a loop, ``for attempt in retrying(...): with attempt: ...`` (see the
    module docstring); ``failed``: the failure of a plain first try, counted as the first."""
    import tenacity

    options = _options(rule)
    if sleep is not None:
        options["sleep"] = sleep
    retrier = tenacity.Retrying(**options)
    if failed is None:
        return retrier
    return _after(retrier, failed)


def _after(
    retrier: Iterable[tenacity.AttemptManager], failed: BaseException
) -> Iterator[tenacity.AttemptManager]:
    """The retrier's tries after the first, which ended in ``failed``."""
    replay: BaseException | None = failed
    for attempt in retrier:
        if replay is None:
            yield attempt
            continue
        with attempt:
            exc, replay = replay, None
            raise exc


def async_retrying(**rule: Unpack[Backoff]) -> tenacity.AsyncRetrying:
    """Tries to make in an async loop, ``async for attempt in async_retrying(...): with
    attempt: ...``, waiting with ``asyncio.sleep`` (see the module docstring)."""
    import tenacity

    return tenacity.AsyncRetrying(**_options(rule))


def backoff_wait(failures: int, *, first: float, most: float) -> float:
    """The wait after ``failures`` failed tries in a row under the same rule (tenacity's
    exponential wait: ``first``, doubling, at most ``most``), for a loop that keeps its own
    schedule of several retries at once (``witness_client``: one per witness)."""
    import tenacity

    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.attempt_number = max(1, failures)
    return float(tenacity.wait_exponential(multiplier=first, max=most)(state))
