"""The budget counter contract: what every counter must do, whatever its backend."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from omnia.budgets import CounterKey, Spent, periods
from omnia.sessions import StoreUnavailable

NOW = dt.datetime(2026, 12, 2, 15, 0, tzinfo=dt.UTC)


def _keys(*scopes: str, now: dt.datetime = NOW) -> list[CounterKey]:
    return [CounterKey(scope, period) for scope in scopes for period in periods(now)]


async def test_a_counter_never_added_to_reads_zero(counter, scope):
    assert await counter.spent(_keys(scope)) == [Spent(), Spent()]


async def test_additions_accumulate_in_every_key(counter, scope):
    shared = scope.replace("agent:", "shared:")
    for _ in range(2):
        await counter.add(_keys(scope, shared), tokens=10, cost_usd=0.25)
    assert await counter.add(_keys(scope, shared), tokens=10, cost_usd=0.25) == [Spent(30, 0.75)] * 4
    assert await counter.spent(_keys(scope, shared)) == [Spent(30, 0.75)] * 4


async def test_periods_count_apart(counter, scope):
    """A new day starts at zero while its month keeps counting."""
    await counter.add(_keys(scope), tokens=5, cost_usd=0.5)
    next_day = NOW + dt.timedelta(days=1)
    await counter.add(_keys(scope, now=next_day), tokens=7, cost_usd=0.0)
    day, month = await counter.spent(_keys(scope, now=next_day))
    assert (day.tokens, month.tokens) == (7, 12)
    assert month.cost_usd == pytest.approx(0.5)


async def test_scopes_count_apart(counter, scope):
    await counter.add(_keys(scope), tokens=5, cost_usd=0.0)
    assert await counter.spent(_keys(scope + "-other")) == [Spent(), Spent()]


async def test_concurrent_additions_from_two_replicas_are_all_counted(make_counter, scope):
    """The shared total is what enforcement reads on every replica: no addition may be lost."""
    replicas = (make_counter(), make_counter())
    await asyncio.gather(
        *(replicas[i % 2].add(_keys(scope), tokens=3, cost_usd=0.001) for i in range(100))
    )
    day, month = await replicas[0].spent(_keys(scope))
    assert day == month
    assert day.tokens == 300 and day.cost_usd == pytest.approx(0.1)
    assert await replicas[1].spent(_keys(scope)) == [day, month]


async def test_reading_no_keys_and_adding_to_none_do_nothing(counter):
    assert await counter.spent([]) == []
    assert await counter.add([], tokens=1, cost_usd=1.0) == []
    await counter.ping()


async def test_an_outage_is_store_unavailable_and_the_counter_recovers_without_a_restart(
    make_durable_counter, scope
):
    """Enforcement fails closed on StoreUnavailable; it must never see a driver error."""
    make_counter = make_durable_counter
    counter = make_counter()
    await counter.add(_keys(scope), tokens=1, cost_usd=0.0)
    make_counter.server.stop()
    with pytest.raises(StoreUnavailable):
        await counter.spent(_keys(scope))
    with pytest.raises(StoreUnavailable):
        await counter.add(_keys(scope), tokens=1, cost_usd=0.0)
    make_counter.server.start()
    # What survived the restart is the server's durability (the test Redis keeps nothing).
    totals = await counter.add(_keys(scope), tokens=1, cost_usd=0.0)
    assert await counter.spent(_keys(scope)) == totals
