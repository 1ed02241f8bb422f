"""Retrying a stream: only before its first event, with bounded, jittered backoff."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from omnia.providers._retrying import RetryPolicy, TransientError, retry_after_seconds, stream_with_retries
from omnia.providers.base import Finish, ProviderError, ProviderEvent, TextDelta


@pytest.mark.parametrize(
    ("attempt", "retry_after", "low", "high"),
    [
        pytest.param(0, None, 0.25, 0.5, id="first-retry-half-to-full-base"),
        pytest.param(1, None, 0.5, 1.0, id="doubles"),
        pytest.param(1, 0.9, 0.9, 1.0, id="waits-at-least-retry-after"),
        pytest.param(1, 3.0, 3.0, 3.0, id="retry-after-beyond-backoff"),
    ],
)
def test_delay_grows_exponentially_with_jitter(attempt, retry_after, low, high):
    policy = RetryPolicy(max_retries=5, base_delay=0.5, max_delay=4.0)
    for _ in range(50):
        assert low <= policy.delay(attempt, retry_after=retry_after) <= high


def test_delay_is_capped_by_max_delay():
    policy = RetryPolicy(max_retries=20, base_delay=0.5, max_delay=4.0)
    assert 2.0 <= policy.delay(10) <= 4.0


@pytest.mark.parametrize(
    ("attempt", "retry_after"),
    [
        pytest.param(2, None, id="retries-exhausted"),
        pytest.param(0, 60.0, id="retry-after-longer-than-max-delay"),
    ],
)
def test_delay_gives_up(attempt, retry_after):
    """Waiting a minute inside a user's turn is worse than reporting the error."""
    assert RetryPolicy(max_retries=2, max_delay=8.0).delay(attempt, retry_after=retry_after) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"retry-after-ms": "1500"}, 1.5, id="milliseconds-first"),
        pytest.param({"retry-after": "2"}, 2.0, id="seconds"),
        pytest.param({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None, id="http-date-ignored"),
        pytest.param({}, None, id="absent"),
    ],
)
def test_retry_after_header(headers, expected):
    assert retry_after_seconds(headers) == expected


class _Attempts:
    """Stream factories that fail in scripted ways, counting their calls."""

    def __init__(self, *outcomes: ProviderError | None, partial: bool = False) -> None:
        self.outcomes = list(outcomes)
        self.partial = partial
        self.calls = 0

    async def open(self) -> AsyncGenerator[ProviderEvent, None]:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if self.partial:
            yield TextDelta("partial ")
        if outcome is not None:
            raise outcome
        yield TextDelta("done")
        yield Finish("stop")


async def _collect(attempts: _Attempts, policy: RetryPolicy) -> list[ProviderEvent]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    events = [e async for e in stream_with_retries(attempts.open, policy=policy, sleep=sleep)]
    assert len(slept) == attempts.calls - 1
    return events


async def test_retryable_failure_before_first_event_is_retried():
    attempts = _Attempts(TransientError("busy", status=429), None)
    events = await _collect(attempts, RetryPolicy(max_retries=2))
    assert events == [TextDelta("done"), Finish("stop")]
    assert attempts.calls == 2


async def test_failure_after_first_event_is_never_retried():
    """The user already saw the partial reply; a second sample would not match it."""
    attempts = _Attempts(TransientError("dropped"), None, partial=True)
    with pytest.raises(ProviderError, match="dropped"):
        await _collect(attempts, RetryPolicy(max_retries=2))
    assert attempts.calls == 1


async def test_non_retryable_failure_is_not_retried():
    attempts = _Attempts(ProviderError("bad key", status=401), None)
    with pytest.raises(ProviderError, match="bad key"):
        await _collect(attempts, RetryPolicy(max_retries=2))
    assert attempts.calls == 1


async def test_retries_stop_after_max_retries():
    attempts = _Attempts(*[TransientError("down", status=503)] * 3)
    with pytest.raises(ProviderError) as caught:
        await _collect(attempts, RetryPolicy(max_retries=2))
    assert (caught.value.retryable, caught.value.status, attempts.calls) == (True, 503, 3)
