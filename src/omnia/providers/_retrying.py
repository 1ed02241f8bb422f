"""Retrying a provider stream, but never a reply that has already begun.

A reply that failed after some of it reached the user cannot be replayed: the
user already saw those words, and a second sample would not repeat them. So a
stream is retried only while it has produced nothing; once the first event is
out, a failure is final and reaches the caller as a ``ProviderError`` whose
``retryable`` flag lets the client decide.

The vendor SDKs' own retries are switched off by the adapters: they cannot
see errors the vendor sends as an event inside a stream that began with
``200 OK`` (Anthropic's ``overloaded_error``), and one policy in one place is
easier to reason about than two stacked ones.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from omnia.providers.base import ProviderError, ProviderEvent


class TransientError(ProviderError):
    """A retryable ``ProviderError`` that may carry the vendor's ``Retry-After``.

    Callers outside this package need not know it: it *is* a ``ProviderError``
    with ``retryable=True``.
    """

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message, retryable=True, status=status)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter.

    Attempt ``n`` (from 0) waits between half and all of
    ``min(max_delay, base_delay * 2**n)`` seconds, so concurrent clients that
    failed together do not come back together. A vendor's ``Retry-After``
    longer than ``max_delay`` ends the retries at once: waiting that long in
    the middle of a user's turn is worse than reporting the error, and coming
    back earlier is futile.
    """

    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int, *, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry number ``attempt``, or ``None`` to give up."""
        if attempt >= self.max_retries:
            return None
        if retry_after is not None and retry_after > self.max_delay:
            return None
        ceiling = min(self.max_delay, self.base_delay * 2**attempt)
        backoff = random.uniform(ceiling / 2, ceiling)
        return max(backoff, retry_after or 0.0)


async def stream_with_retries(
    open_stream: Callable[[], AsyncGenerator[ProviderEvent, None]],
    *,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncIterator[ProviderEvent]:
    """Yield the events of ``open_stream()``, retrying it while it has yielded none.

    Cancellation: cancelling the consumer (or closing this generator) closes
    the current attempt's stream, which releases its HTTP connection; a
    pending backoff sleep is simply abandoned.
    """
    attempt = 0
    while True:
        stream = open_stream()
        started = False
        try:
            async for event in stream:
                started = True
                yield event
            return
        except ProviderError as error:
            if started or not error.retryable:
                raise
            retry_after = error.retry_after if isinstance(error, TransientError) else None
            wait = policy.delay(attempt, retry_after=retry_after)
            if wait is None:
                raise
        finally:
            await stream.aclose()
        await sleep(wait)
        attempt += 1


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The wait a vendor asked for: ``retry-after-ms``, or ``retry-after`` in seconds.

    The HTTP-date form of ``retry-after`` is not used by LLM vendors and is ignored.
    """
    for name, scale in (("retry-after-ms", 1000), ("retry-after", 1)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            continue
    return None
