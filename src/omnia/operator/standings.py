"""Budget standings: an agent's spending as its status shows it, and the Events a threshold deserves.

The runtimes count every turn in the session store (``omnia.budgets``); the
operator reads those counters back (``metering``) and turns the totals into
``status.budgets``, one entry per limited scope and period, with the limits
of the spec as it is now. Pure: no store, no API here.

Events are derived from the status, not from memory: an entry crosses a
threshold when its ``percentUsed`` reaches it while the entry written
before, of the same period (the same ``resetsAt``), was below it. Since the
previous entry is the status already on the object, a restarted operator
does not announce a crossing twice, and each poll that finds nothing new
announces nothing. When one poll finds a budget past both thresholds at
once, only the higher is announced. A new period starts from zero, so it
may cross each threshold again; so may a period whose limit was raised
above its spending and is then spent again.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence

from omnia import budgets
from omnia.api.v1alpha1 import AgentRuntime, BudgetStanding
from omnia.budgets import CounterKey, Limited, Spent
from omnia.operator import sessionstores
from omnia.operator.status import BUDGET_EXCEEDED, Check
from omnia.rendering import budget_config

NEARLY_SPENT = "BudgetNearlySpent"
EXCEEDED = BUDGET_EXCEEDED

THRESHOLDS = ((100, EXCEEDED), (80, NEARLY_SPENT))
"""(percent, Event reason), highest first."""

Reading = Mapping[CounterKey, Spent]
"""The totals of an agent's counters (its scopes in the current day and month), as last read."""


def limits(agent: AgentRuntime) -> list[Limited]:
    """The limits the status shows: those of ``spec.budget``, for an agent counting in redis or postgres.

    An agent with ``session.type: memory`` counts in each pod's memory,
    which the operator cannot read: it shows no budgets.
    """
    if agent.spec.session.type not in sessionstores.TYPES:
        return []
    return budgets.limits(budget_config(agent.spec.budget), namespace=agent.metadata.namespace or "",
                          agent=agent.metadata.name)


def standings(
    limits: Sequence[Limited], *, reading: Reading | None, previous: Sequence[BudgetStanding]
) -> list[BudgetStanding]:
    """One entry per limit in ``limits``, in their order.

    The totals come from ``reading``; a limit the reading has no total for
    (the counters could not be read yet, or not since the spec changed)
    keeps the totals of its ``previous`` entry, judged against the limit
    now in the spec, and has no entry if there is none.
    """
    read = {(key.scope, key.period.kind): (key, spent) for key, spent in (reading or {}).items()}
    before = {(entry.scope, entry.name, entry.period): entry for entry in previous}
    found = []
    for limited in limits:
        scope, name = _scope_and_name(limited.scope)
        if (limited.scope, limited.kind) in read:
            key, spent = read[(limited.scope, limited.kind)]
            tokens, cost, resets_at = spent.tokens, spent.cost_usd, key.period.ends_at
        elif (scope, name, limited.kind) in before:
            old = before[(scope, name, limited.kind)]
            tokens, cost, resets_at = old.tokens, old.cost_usd, old.resets_at
        else:
            continue
        limit = limited.limit
        found.append(BudgetStanding(
            scope=scope,
            name=name,
            period=limited.kind,
            tokens=tokens,
            cost_usd=round(cost, 6),
            tokens_limit=limit.tokens,
            cost_usd_limit=limit.cost_usd,
            percent_used=percent_used(tokens=tokens, cost_usd=cost, tokens_limit=limit.tokens,
                                      cost_usd_limit=limit.cost_usd),
            resets_at=resets_at,
        ))
    return found


def percent_used(*, tokens: int, cost_usd: float, tokens_limit: int | None, cost_usd_limit: float | None) -> int:
    """The higher share of a limit spent, in whole percent rounded down: 100 exactly when a turn is refused.

    Rounding down keeps the two rules one: the runtime refuses a turn once
    spent >= limit, and this reaches 100 at that same point. A limit of 0
    is spent from the start (100).
    """
    shares = [
        _percent(spent, limit)
        for spent, limit in ((tokens, tokens_limit), (cost_usd, cost_usd_limit))
        if limit is not None
    ]
    return max(shares, default=0)


def _percent(spent: float, limit: float) -> int:
    if limit <= 0:
        return 100
    # Rounded to 9 places first, so that 0.29 of 1 USD is 29%, not 28.999…%.
    share = int(round(spent * 100 / limit, 9))
    # The comparison decides which side of 100 (as the runtime's does), whatever the division rounds to.
    return max(100, share) if spent >= limit else min(99, share)


def crossings(previous: Sequence[BudgetStanding], current: Sequence[BudgetStanding]) -> list[tuple[str, str, str]]:
    """The Warning Events (type, reason, message) of entries that reached a threshold since ``previous``."""
    before = {(e.scope, e.name, e.period, e.resets_at): e.percent_used for e in previous}
    found = []
    for entry in current:
        was = before.get((entry.scope, entry.name, entry.period, entry.resets_at), 0)
        reached = _threshold(entry.percent_used)
        if reached is not None and reached != _threshold(was):
            found.append(("Warning", reached, message(entry)))
    return found


def _threshold(percent: int) -> str | None:
    return next((reason for at, reason in THRESHOLDS if percent >= at), None)


def exceeded(current: Sequence[BudgetStanding]) -> Check | None:
    """The BudgetExceeded condition of an agent with budgets (None without): True while any is spent."""
    if not current:
        return None
    spent = [entry for entry in current if entry.percent_used >= 100]
    if spent:
        return Check(EXCEEDED, "True", "BudgetSpent", "; ".join(message(entry) for entry in spent))
    highest = max(current, key=lambda entry: entry.percent_used)
    return Check(EXCEEDED, "False", "WithinBudget", message(highest))


def message(entry: BudgetStanding) -> str:
    """``the daily budget of agent support-agent is 85% spent (1700000 of 2000000 tokens); it resets at …``."""
    what = "daily" if entry.period == "day" else "monthly"
    amounts = []
    if entry.tokens_limit is not None:
        amounts.append(f"{entry.tokens} of {entry.tokens_limit} tokens")
    if entry.cost_usd_limit is not None:
        amounts.append(f"{entry.cost_usd:.4f} of {entry.cost_usd_limit:.4f} USD")
    resets = _utc(entry.resets_at)
    if entry.percent_used >= 100:
        state = f"is spent ({', '.join(amounts)}); turns are refused with BUDGET_EXCEEDED until it resets at {resets}"
    else:
        state = f"is {entry.percent_used}% spent ({', '.join(amounts)}); it resets at {resets}"
    return f"the {what} budget of {entry.scope} {entry.name} {state}"


def _utc(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _scope_and_name(scope: str) -> tuple[str, str]:
    """``agent:team-a/support-agent`` → (``agent``, ``support-agent``): the status is the namespace's already."""
    kind, _, qualified = scope.partition(":")
    return kind, qualified.partition("/")[2]
