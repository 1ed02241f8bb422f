"""Budgets in the agent loop: refused before the model is called, counted after the turn."""

from __future__ import annotations

import datetime as dt

import pytest

from omnia.agent import Agent, TurnDone, TurnFailed, UserInput
from omnia.budgets import Budgets, MemoryCounter
from omnia.config import (
    AgentConfig,
    BudgetConfig,
    BudgetLimit,
    MockScript,
    Pricing,
    ProviderConfig,
    ScriptedError,
    ScriptedReply,
    ScriptedToolCall,
    SharedBudgetConfig,
)
from omnia.sessions import MemoryStore, StoreUnavailable

from .test_loop import RecordingProvider, ScriptedClient

NOW = dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.UTC)
TURN_TOKENS = 15  # input 10 + output 5, as scripted below


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


class BudgetHarness:
    def __init__(self, budget: BudgetConfig, *, replies=None, counter=None, agent_name="helper") -> None:
        self.config = AgentConfig(
            name=agent_name,
            namespace="team-a",
            provider=ProviderConfig(
                type="mock", pricing=Pricing(input_per_million=1e6, output_per_million=1e6)
            ),
            budget=budget,
        )
        replies = replies or [ScriptedReply(text="fine", input_tokens=10, output_tokens=5)]
        self.provider = RecordingProvider(MockScript(replies=replies))
        self.store = MemoryStore()
        self.counter = counter or MemoryCounter()
        self.clock = Clock()
        self.budgets = Budgets(
            budget, namespace="team-a", agent=agent_name, counter=self.counter, clock=self.clock
        )
        self.agent = Agent(config=self.config, provider=self.provider, store=self.store, budgets=self.budgets)

    async def turn(self, session_id: str, text: str = "hi") -> list:
        events = []

        async def emit(event):
            events.append(event)

        await self.agent.run_turn(session_id, UserInput(text), channel=ScriptedClient(), emit=emit)
        return events


async def test_a_spent_budget_refuses_the_turn_before_the_model_is_called_and_stores_nothing():
    h = BudgetHarness(BudgetConfig(daily=BudgetLimit(tokens=2 * TURN_TOKENS)))
    session, _ = await h.agent.open_session(session_id=None)
    for _ in range(2):
        assert isinstance((await h.turn(session.id))[-1], TurnDone)
    calls = len(h.provider.requests)

    refused = (await h.turn(session.id))[-1]

    assert isinstance(refused, TurnFailed)
    assert (refused.code, refused.retryable) == ("BUDGET_EXCEEDED", False)
    assert refused.message == (
        "the daily budget of agent:team-a/helper is spent (30 of 30 tokens); "
        "it resets at 2027-01-01T00:00:00Z"
    )
    assert len(h.provider.requests) == calls
    assert len((await h.store.get(session.id)).turns) == 2


async def test_usage_is_counted_before_done_so_the_next_turn_sees_it():
    """Otherwise a client could send its next message before its last turn counted."""
    h = BudgetHarness(BudgetConfig(monthly=BudgetLimit(tokens=1000)))
    session, _ = await h.agent.open_session(session_id=None)
    seen_at_done = []

    async def emit(event):
        if isinstance(event, TurnDone):
            seen_at_done.extend(spent.tokens for spent in (await h.budgets.spent()).values())

    await h.agent.run_turn(session.id, UserInput("hi"), channel=ScriptedClient(), emit=emit)
    assert seen_at_done == [TURN_TOKENS, TURN_TOKENS]


async def test_done_carries_the_totals_after_the_turn_with_their_limits():
    """What the facade exports as omnia_budget_spent and omnia_budget_limit."""
    h = BudgetHarness(
        BudgetConfig(
            daily=BudgetLimit(tokens=1000),
            shared=SharedBudgetConfig(name="team", monthly=BudgetLimit(costUSD=99)),
        )
    )
    session, _ = await h.agent.open_session(session_id=None)
    await h.turn(session.id)
    done = (await h.turn(session.id))[-1]
    assert [(s.scope, s.kind, s.spent.tokens, s.limit) for s in done.budgets] == [
        ("agent:team-a/helper", "day", 30, BudgetLimit(tokens=1000)),
        ("agent:team-a/helper", "month", 30, None),
        ("shared:team-a/team", "day", 30, None),
        ("shared:team-a/team", "month", 30, BudgetLimit(costUSD=99)),
    ]
    assert done.budgets[-1].spent.cost_usd == pytest.approx(30.0)


async def test_a_turn_under_the_limit_runs_in_full_even_if_it_crosses_it():
    """Nothing is reserved: the check is before the turn, so the last turn may overshoot."""
    h = BudgetHarness(BudgetConfig(daily=BudgetLimit(tokens=TURN_TOKENS + 1)))
    session, _ = await h.agent.open_session(session_id=None)
    assert isinstance((await h.turn(session.id))[-1], TurnDone)
    assert isinstance((await h.turn(session.id))[-1], TurnDone)
    assert (await h.turn(session.id))[-1].code == "BUDGET_EXCEEDED"
    assert [s.tokens for s in (await h.budgets.spent()).values()] == [2 * TURN_TOKENS] * 2


@pytest.mark.parametrize(
    "budget",
    [
        pytest.param(BudgetConfig(daily=BudgetLimit(costUSD=30)), id="daily-cost"),
        pytest.param(BudgetConfig(monthly=BudgetLimit(tokens=30)), id="monthly-tokens"),
        pytest.param(
            BudgetConfig(shared=SharedBudgetConfig(name="team", daily=BudgetLimit(tokens=30))), id="shared"
        ),
    ],
)
async def test_each_kind_of_limit_refuses_once_reached(budget):
    """Pricing is a dollar a token here, so cost and tokens reach 30 together."""
    h = BudgetHarness(budget)
    session, _ = await h.agent.open_session(session_id=None)
    outcomes = [(await h.turn(session.id))[-1] for _ in range(3)]
    assert [type(o).__name__ for o in outcomes] == ["TurnDone", "TurnDone", "TurnFailed"]
    assert "(30 of 30 tokens)" in outcomes[-1].message or "(30.0000 of 30.0000 USD)" in outcomes[-1].message


async def test_a_new_day_resets_the_daily_budget_but_not_the_monthly_one():
    h = BudgetHarness(BudgetConfig(daily=BudgetLimit(tokens=TURN_TOKENS), monthly=BudgetLimit(tokens=100)))
    session, _ = await h.agent.open_session(session_id=None)
    await h.turn(session.id)
    assert (await h.turn(session.id))[-1].code == "BUDGET_EXCEEDED"
    h.clock.now = NOW + dt.timedelta(minutes=2)  # 2027-01-01: a new day and a new month
    assert isinstance((await h.turn(session.id))[-1], TurnDone)


async def test_agents_naming_one_shared_budget_spend_it_together():
    counter = MemoryCounter()
    shared = BudgetConfig(shared=SharedBudgetConfig(name="team", daily=BudgetLimit(tokens=2 * TURN_TOKENS)))
    first = BudgetHarness(shared, counter=counter, agent_name="first")
    second = BudgetHarness(shared, counter=counter, agent_name="second")
    one, _ = await first.agent.open_session(session_id=None)
    two, _ = await second.agent.open_session(session_id=None)
    await first.turn(one.id)
    await second.turn(two.id)
    refused = (await first.turn(one.id))[-1]
    assert refused.code == "BUDGET_EXCEEDED" and "shared:team-a/team" in refused.message


async def test_a_failed_turn_still_counts_what_the_model_was_paid_for():
    """The first model call (a tool call) was paid; the second one failed."""
    h = BudgetHarness(
        BudgetConfig(daily=BudgetLimit(tokens=1000)),
        replies=[
            ScriptedReply(tool_calls=[ScriptedToolCall(name="lookup")], input_tokens=10, output_tokens=5),
            ScriptedReply(text="x", error=ScriptedError(after_chunks=1)),
        ],
    )
    session, _ = await h.agent.open_session(session_id=None)
    assert (await h.turn(session.id))[-1].code == "PROVIDER_ERROR"
    assert (await h.store.get(session.id)).turns == ()
    assert [s.tokens for s in (await h.budgets.spent()).values()] == [TURN_TOKENS] * 2


class DownCounter(MemoryCounter):
    async def spent(self, keys):
        raise StoreUnavailable("connection refused")


async def test_unreachable_counters_refuse_the_turn_as_retryable_store_unavailable():
    """Fail closed: a budget that cannot be read is not a budget that was met."""
    h = BudgetHarness(BudgetConfig(daily=BudgetLimit(tokens=100)), counter=DownCounter())
    session, _ = await h.agent.open_session(session_id=None)
    failed = (await h.turn(session.id))[-1]
    assert (failed.code, failed.retryable) == ("STORE_UNAVAILABLE", True)
    assert h.provider.requests == []


async def test_without_limits_no_counter_is_touched():
    h = BudgetHarness(BudgetConfig(), counter=DownCounter())
    session, _ = await h.agent.open_session(session_id=None)
    assert isinstance((await h.turn(session.id))[-1], TurnDone)
