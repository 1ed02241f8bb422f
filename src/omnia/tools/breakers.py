"""Circuit breakers: stop calling a server that keeps failing, then try it again.

A model that retries a broken tool, across many sessions at once, would keep
a struggling server down and make every turn wait for timeouts. After
``failure_threshold`` failures in a row the breaker of that server *opens*:
calls fail at once, telling the model when the tool may work again. After
``reset_after`` seconds it lets one trial call through (*half-open*); its
success closes the breaker, its failure opens it for another period.

Only failures of the server count (no answer, HTTP 5xx, a broken MCP
session). A tool that answered with an error did its job, and arguments
rejected before the call never reached the server.

Pure state machines over an injected clock; one event loop uses them, so
they need no locks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    """The breaker of one endpoint."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.reset_after = reset_after
        self._clock = clock
        self.failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_after:
            return "half-open"
        return "open"

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a trial call through; 0 when it would now."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.reset_after - self._clock())

    def allow(self) -> bool:
        """Whether a call may go out now; in half-open state only one trial at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "open" or self._trial_running:
            return False
        self._trial_running = True
        return True

    def succeeded(self) -> None:
        self.failures = 0
        self._opened_at = None
        self._trial_running = False

    def failed(self) -> None:
        self.failures += 1
        if self._trial_running or self.failures >= self.failure_threshold:
            self._opened_at = self._clock()
        self._trial_running = False

    def abandoned(self) -> None:
        """A call ended with no verdict on the server (cancelled): free the trial slot."""
        self._trial_running = False


class Breakers:
    """One breaker per endpoint, created on first use with shared settings."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_after = reset_after
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def __getitem__(self, endpoint: str) -> CircuitBreaker:
        breaker = self._breakers.get(endpoint)
        if breaker is None:
            breaker = self._breakers[endpoint] = CircuitBreaker(
                failure_threshold=self.failure_threshold, reset_after=self.reset_after, clock=self._clock
            )
        return breaker

    def states(self) -> dict[str, State]:
        return {endpoint: breaker.state for endpoint, breaker in self._breakers.items()}
