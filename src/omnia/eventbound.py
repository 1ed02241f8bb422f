"""A bound on each server-sent event (or whole JSON body) an HTTP client reads.

The SDKs that read event streams (MCP's, OpenAI's, Anthropic's) keep an
event's bytes until the blank line that ends it; a server that never sends
one grows the client for as long as it sends. ``EventBound`` wraps a
response body and fails the read once ``limit`` bytes pass without an event
ending. A JSON body has no blank line, so it is bounded as a whole.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx2

# Server-sent events end with a blank line; a JSON body has none.
_EVENT_ENDS = (b"\n\n", b"\n\r\n")


class EventTooLarge(httpx2.RemoteProtocolError):
    """A response's event (or JSON body) passed its bound: the server's fault, not the network's."""


def too_large_in(error: BaseException | None) -> EventTooLarge | None:
    """The ``EventTooLarge`` behind ``error`` (an SDK wraps it in its own), if any."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, EventTooLarge):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


class EventBound(httpx2.AsyncByteStream):
    """A response body with at most ``limit`` bytes between two blank lines.

    Past the bound the read fails as a protocol error naming ``what``, which
    the SDKs report as a failed call.
    """

    def __init__(self, stream: httpx2.AsyncByteStream, limit: int, *, what: str) -> None:
        self._stream = stream
        self._limit = limit
        self._what = what

    async def __aiter__(self):  # type: ignore[override]
        run, tail = 0, b""
        async for chunk in self._stream:
            window = tail + chunk
            ends = [window.rfind(end) + len(end) for end in _EVENT_ENDS if end in window]
            run = len(window) - max(ends) if ends else run + len(chunk)
            if run > self._limit:
                raise EventTooLarge(f"{self._what} passed {self._limit} bytes")
            tail = window[-2:]
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


def bounding(limit: int, *, what: str) -> Callable[[httpx2.Response], Awaitable[None]]:
    """A response hook that bounds the body of every response of a client.

    A hook, not a transport, so that the client keeps the transport it builds
    itself (with the proxies of its environment).
    """

    async def bound(response: httpx2.Response) -> None:
        response.stream = EventBound(response.stream, limit, what=what)

    return bound
