"""Limits a server applies to each client: frame size and message rate.

Both run for every frame a client sends, so both are O(1) and allocation-free
in the common case. Time is passed in rather than read, which keeps the rate
limiter deterministic under test.
"""

from __future__ import annotations


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
