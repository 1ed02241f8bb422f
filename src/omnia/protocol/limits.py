"""Limits a server applies to each client: frame size, message rate and connections held.

Both run for every frame a client sends, so both are O(1) and allocation-free
in the common case. Time is passed in rather than read, which keeps the rate
limiter deterministic under test.
"""

from __future__ import annotations

from collections.abc import Hashable


def exceeds(text: str, max_bytes: int) -> bool:
    """Whether ``text`` encodes to more than ``max_bytes`` bytes of UTF-8.

    A character encodes to one to four bytes, so most frames are decided by
    their length alone; only the ones in between pay for an encoding.
    """
    length = len(text)
    if length > max_bytes:
        return True
    if length * 4 <= max_bytes:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > max_bytes


class TokenBucket:
    """A token bucket: ``burst`` frames at once, ``rate`` frames per second sustained.

    A ``rate`` of zero or less disables the limit.
    """

    __slots__ = ("rate", "burst", "_tokens", "_stamp")

    def __init__(self, *, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; ``now`` is a monotonic time in seconds."""
        if self.rate <= 0:
            return True
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
            self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def retry_after(self, now: float) -> float:
        """Seconds until the next token, for the client's back-off hint."""
        if self.rate <= 0:
            return 0.0
        missing = 1.0 - (self._tokens + max(0.0, now - self._stamp) * self.rate)
        return max(0.0, missing / self.rate)


class Shares:
    """How many connections each client holds, each at most ``limit``.

    A ``limit`` of zero or less disables the bound. A client is counted only
    while it holds something, so the table is as large as the set of clients
    connected at once.
    """

    __slots__ = ("limit", "_held")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[Hashable, int] = {}

    def take(self, client: Hashable) -> bool:
        """Count one more connection of ``client``; False (nothing counted) at its limit."""
        if self.limit <= 0:
            return True
        held = self._held.get(client, 0)
        if held >= self.limit:
            return False
        self._held[client] = held + 1
        return True

    def give_back(self, client: Hashable) -> None:
        """Uncount one connection ``take`` counted for ``client``."""
        held = self._held.get(client, 0) - 1
        if held > 0:
            self._held[client] = held
        else:
            self._held.pop(client, None)

    def held(self, client: Hashable) -> int:
        return self._held.get(client, 0)
