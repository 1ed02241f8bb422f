"""Budget standings in the AgentRuntime's status, and the threshold Events derived from them."""

from __future__ import annotations

import datetime

import pytest

from omnia.api.v1alpha1 import BudgetStanding
from omnia.budgets import CounterKey, Spent, periods
from omnia.operator import standings
from tests.operator import manifests

NOW = datetime.datetime(2026, 12, 2, 15, 0, tzinfo=datetime.timezone.utc)
DAY, MONTH = periods(NOW)
TOMORROW = datetime.datetime(2026, 12, 3, tzinfo=datetime.timezone.utc)
SCOPE = "agent:team-a/agent"
SHARED = "shared:team-a/team-llm"


def agent(session: str = "redis", **budget):
    body = manifests.agent(session={"type": session, "secretRef": {"name": "store", "key": "url"}}
                           if session != "memory" else {"type": "memory"}, budget=budget)
    return manifests.model(body)


def reading(*totals: tuple[str, datetime.datetime, int, float]) -> dict[CounterKey, Spent]:
    found = {}
    for scope, now, tokens, cost in totals:
        for period in periods(now):
            found[CounterKey(scope, period)] = Spent(tokens, cost)
    return found


def entry(percent: int, *, period: str = "day", resets_at: datetime.datetime = TOMORROW, scope: str = "agent",
          name: str = "agent") -> BudgetStanding:
    return BudgetStanding(scope=scope, name=name, period=period, tokens=percent * 10, tokens_limit=1000,
                          percent_used=percent, resets_at=resets_at)


def test_each_limit_gets_an_entry_with_totals_limits_percent_and_reset_time():
    limits = standings.limits(agent(daily={"tokens": 1000}, monthly={"costUSD": 10},
                                    shared={"name": "team-llm", "monthly": {"tokens": 5000, "costUSD": 4}}))
    current = standings.standings(limits, reading=reading((SCOPE, NOW, 850, 2.5), (SHARED, NOW, 1000, 3.3)),
                                  previous=[])
    assert [(e.scope, e.name, e.period, e.percent_used) for e in current] == [
        ("agent", "agent", "day", 85), ("agent", "agent", "month", 25), ("shared", "team-llm", "month", 82)]
    day = current[0]
    assert (day.tokens, day.cost_usd, day.tokens_limit, day.cost_usd_limit) == (850, 2.5, 1000, None)
    assert day.resets_at == TOMORROW
    assert current[1].resets_at == datetime.datetime(2027, 1, 1, tzinfo=datetime.timezone.utc)
    assert current[0].model_dump(mode="json", exclude_none=True)["resetsAt"] == "2026-12-03T00:00:00Z"


def test_an_agent_counting_in_memory_shows_no_budgets():
    """Each pod's own counter cannot be read from outside: nothing would be true to show."""
    assert standings.limits(agent("memory", daily={"tokens": 1000})) == []


def test_an_agent_without_limits_shows_no_budgets():
    assert standings.limits(agent(shared={"name": "team-llm"})) == []


def test_without_a_reading_the_previous_totals_are_kept_and_judged_by_the_limit_now_in_the_spec():
    """An unreachable store keeps the status; a raised limit shows at once."""
    limits = standings.limits(agent(daily={"tokens": 2000}))
    current = standings.standings(limits, reading=None, previous=[entry(90)])
    assert [(e.tokens, e.tokens_limit, e.percent_used, e.resets_at) for e in current] == [(900, 2000, 45, TOMORROW)]
    assert standings.standings(limits, reading=None, previous=[]) == []


@pytest.mark.parametrize(("spent", "limit", "percent"), [
    pytest.param(799, 1000, 79, id="just-below-80"),
    pytest.param(800, 1000, 80, id="at-80"),
    pytest.param(999, 1000, 99, id="below-the-limit-is-never-100"),
    pytest.param(1000, 1000, 100, id="at-the-limit"),
    pytest.param(2500, 1000, 250, id="past-the-limit"),
    pytest.param(0, 0, 100, id="a-zero-limit-is-spent"),
    pytest.param(999_999_999, 1_000_000_000, 99, id="large-just-below"),
])
def test_percent_used_reaches_100_exactly_when_the_runtime_refuses_turns(spent, limit, percent):
    assert standings.percent_used(tokens=spent, cost_usd=0, tokens_limit=limit, cost_usd_limit=None) == percent


def test_percent_used_is_the_higher_of_tokens_and_cost_and_not_fooled_by_float_division():
    assert standings.percent_used(tokens=100, cost_usd=0.29, tokens_limit=1000, cost_usd_limit=1.0) == 29
    assert standings.percent_used(tokens=900, cost_usd=0.29, tokens_limit=1000, cost_usd_limit=1.0) == 90
    assert standings.percent_used(tokens=0, cost_usd=0, tokens_limit=None, cost_usd_limit=None) == 0


@pytest.mark.parametrize(("before", "after", "reasons"), [
    pytest.param([], [entry(50)], [], id="below-80"),
    pytest.param([], [entry(80)], ["BudgetNearlySpent"], id="first-reading-at-80"),
    pytest.param([entry(79)], [entry(85)], ["BudgetNearlySpent"], id="crossing-80"),
    pytest.param([entry(85)], [entry(95)], [], id="already-past-80"),
    pytest.param([entry(95)], [entry(100)], ["BudgetExceeded"], id="crossing-100"),
    pytest.param([entry(100)], [entry(130)], [], id="already-spent"),
    pytest.param([entry(10)], [entry(120)], ["BudgetExceeded"], id="past-both-at-once-announces-the-higher"),
    pytest.param([entry(95, resets_at=NOW)], [entry(85)], ["BudgetNearlySpent"], id="a-new-period-starts-over"),
    pytest.param([entry(90)], [entry(40)], [], id="a-raised-limit"),
    pytest.param([entry(40)], [entry(85)], ["BudgetNearlySpent"], id="spent-again-after-a-raise"),
    pytest.param([entry(85, period="month")], [entry(85, period="month"), entry(85)], ["BudgetNearlySpent"],
                 id="day-and-month-apart"),
])
def test_an_event_is_posted_once_when_a_threshold_is_reached(before, after, reasons):
    events = standings.crossings(before, after)
    assert [reason for _, reason, _ in events] == reasons
    assert all(type_ == "Warning" for type_, _, _ in events)


def test_event_messages_name_the_budget_the_amounts_and_the_reset():
    (_, _, message), = standings.crossings([], [entry(85)])
    assert message == ("the daily budget of agent agent is 85% spent (850 of 1000 tokens); "
                       "it resets at 2026-12-03T00:00:00Z")
    spent = BudgetStanding(scope="shared", name="team-llm", period="month", tokens=10, cost_usd=5.5,
                           cost_usd_limit=5.0, percent_used=110, resets_at=TOMORROW)
    (_, reason, message), = standings.crossings([], [spent])
    assert reason == "BudgetExceeded"
    assert message == ("the monthly budget of shared team-llm is spent (5.5000 of 5.0000 USD); turns are refused "
                       "with BUDGET_EXCEEDED until it resets at 2026-12-03T00:00:00Z")


def test_the_condition_is_true_while_any_budget_is_spent_and_absent_without_budgets():
    assert standings.exceeded([]) is None
    within = standings.exceeded([entry(85), entry(20, period="month")])
    assert (within.type, within.status, within.reason) == ("BudgetExceeded", "False", "WithinBudget")
    assert "85% spent" in within.message
    spent = standings.exceeded([entry(20), entry(100, period="month")])
    assert (spent.status, spent.reason) == ("True", "BudgetSpent")
    assert spent.message.startswith("the monthly budget of agent agent is spent")
