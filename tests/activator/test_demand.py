"""Held connections are counted per agent, bounded in all, and announced to listeners."""

from __future__ import annotations

import pytest

from omnia.activator.demand import Demand, HeldLimit
from omnia.activator.hosts import AgentRef

SUPPORT = AgentRef("team-a", "support-agent")
BILLING = AgentRef("team-b", "billing")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_held_connections_are_counted_per_agent_and_released() -> None:
    demand = Demand(max_held=10, remember_seconds=60, clock=Clock())
    with demand.hold(SUPPORT), demand.hold(SUPPORT), demand.hold(BILLING):
        assert (demand.held(SUPPORT), demand.held(BILLING), demand.total_held) == (2, 1, 3)
        assert demand.requested(SUPPORT)
    assert (demand.held(SUPPORT), demand.total_held) == (0, 0)
    assert not demand.requested(SUPPORT)


def test_one_more_than_max_held_is_refused_whatever_the_agent() -> None:
    demand = Demand(max_held=2, remember_seconds=60, clock=Clock())
    with demand.hold(SUPPORT), demand.hold(BILLING):
        with pytest.raises(HeldLimit), demand.hold(SUPPORT):
            pass
        assert demand.total_held == 2
    with demand.hold(SUPPORT):
        assert demand.total_held == 1


def test_one_agent_cannot_take_every_place_of_a_shared_activator() -> None:
    """One activator serves every agent (every tenant) of its scope: a client
    flooding one agent at zero must not lock the others out of waking."""
    demand = Demand(max_held=10, max_held_per_agent=2, remember_seconds=60, clock=Clock())
    with demand.hold(SUPPORT), demand.hold(SUPPORT):
        with pytest.raises(HeldLimit, match="support-agent"), demand.hold(SUPPORT):
            pass
        with demand.hold(BILLING), demand.hold(BILLING):
            assert (demand.held(SUPPORT), demand.held(BILLING)) == (2, 2)
    with demand.hold(SUPPORT):
        assert demand.held(SUPPORT) == 1


def test_a_plain_request_keeps_the_agent_wanted_for_the_wake_timeout() -> None:
    """An HTTP client told to retry later must find the agent woken, so its request counts for a while."""
    clock = Clock()
    demand = Demand(max_held=2, remember_seconds=60, clock=clock)
    demand.request(SUPPORT)
    clock.now = 59
    assert demand.requested(SUPPORT) and not demand.requested(BILLING)
    clock.now = 61
    assert not demand.requested(SUPPORT)
    assert demand.total_held == 0


def test_listeners_hear_each_new_hold_and_request_until_they_unsubscribe() -> None:
    demand = Demand(max_held=5, remember_seconds=60, clock=Clock())
    heard: list[AgentRef] = []
    with demand.subscribe(heard.append):
        with demand.hold(SUPPORT), demand.hold(SUPPORT):
            pass
        demand.request(BILLING)
    with demand.hold(SUPPORT):
        pass
    assert heard == [SUPPORT, SUPPORT, BILLING]
