"""Circuit breakers as state machines over a hand-driven clock."""

from __future__ import annotations

import pytest

from omnia.tools import Breakers, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_the_threshold_of_failures_in_a_row():
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, reset_after=10, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failed()
    assert breaker.state == "closed"
    assert breaker.allow()
    breaker.failed()
    assert (breaker.state, breaker.allow(), breaker.retry_in()) == ("open", False, 10)


def test_a_success_resets_the_count():
    breaker = CircuitBreaker(failure_threshold=2, clock=Clock())
    breaker.failed()
    breaker.succeeded()
    breaker.failed()
    assert breaker.state == "closed"


def test_after_the_cool_down_one_trial_call_decides():
    """Half-open lets exactly one call through; others fail fast until it ends."""
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after=10, clock=clock)
    breaker.failed()
    clock.now += 10
    assert breaker.state == "half-open"
    assert breaker.allow() and not breaker.allow()
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.allow()


def test_a_failed_trial_opens_the_breaker_for_another_period():
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=5, reset_after=10, clock=clock)
    for _ in range(5):
        breaker.failed()
    clock.now += 10
    assert breaker.allow()
    breaker.failed()
    assert breaker.state == "open" and breaker.retry_in() == 10


def test_an_abandoned_trial_frees_the_slot():
    """A cancelled trial says nothing about the server; the next call may try."""
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after=1, clock=clock)
    breaker.failed()
    clock.now += 1
    assert breaker.allow()
    breaker.abandoned()
    assert breaker.allow()


def test_breakers_are_per_endpoint():
    breakers = Breakers(failure_threshold=1, clock=Clock())
    breakers["http://a:80"].failed()
    assert breakers.states() == {"http://a:80": "open"}
    assert breakers["http://b:80"].allow()


def test_a_threshold_below_one_is_refused():
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
