"""Enforcing budgets: check before a turn, count after it.

Before a turn the agent asks ``Budgets.check`` whether any configured limit
of the current UTC day or month is already reached (spent >= limit); if so
the turn is refused with ``BUDGET_EXCEEDED`` and nothing runs. After the
turn, ``Budgets.spend`` adds its actual usage to every counter it belongs to.

Nothing is reserved in between, because a turn's cost is unknown until it
ends. So every turn admitted while the total was still under the limit may
finish and count in full: the total can exceed a limit by at most the turns
that were running when it was crossed, one per turn in flight on each
replica (with one client per replica, one turn per replica). Turns admitted
after the crossing are all refused, on every replica, because the counters
are shared.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from omnia.budgets.base import CounterKey, Period, Spent, UsageCounter, periods
from omnia.config import BudgetConfig, BudgetLimit, BudgetLimits


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Exceeded:
    """Which limit a refused turn ran into, and when its period ends."""

    scope: str
    period: Period
    unit: str
    limit: float
    spent: float

    @property
    def message(self) -> str:
        what = "daily" if self.period.kind == "day" else "monthly"
        if self.unit == "tokens":
            amounts = f"{int(self.spent)} of {int(self.limit)} tokens"
        else:
            amounts = f"{self.spent:.4f} of {self.limit:.4f} USD"
        return (
            f"the {what} budget of {self.scope} is spent ({amounts}); "
            f"it resets at {self.period.ends_at.isoformat().replace('+00:00', 'Z')}"
        )


@dataclass(frozen=True)
class Limited:
    """One configured limit: of ``scope``, per ``kind`` of period (``day`` or ``month``)."""

    scope: str
    kind: str
    limit: BudgetLimit


@dataclass(frozen=True)
class Standing:
    """What ``scope`` has spent in the current period of ``kind`` (``day`` or ``month``)."""

    scope: str
    kind: str
    spent: Spent
    limit: BudgetLimit | None = None


def limits(config: BudgetConfig, *, namespace: str, agent: str) -> list[Limited]:
    """The limits ``config`` sets, with the scope each counts in."""
    scoped: list[tuple[str, BudgetLimits]] = [(f"agent:{namespace}/{agent}", config)]
    if config.shared is not None:
        scoped.append((f"shared:{namespace}/{config.shared.name}", config.shared))
    return [
        Limited(scope, kind, limit)
        for scope, budget in scoped
        for kind, limit in (("day", budget.daily), ("month", budget.monthly))
        if limit is not None and limit.limited
    ]


class Budgets:
    """The budgets of one agent: its own (``agent:<namespace>/<name>``) and a
    shared one (``shared:<namespace>/<name>``), counted in ``counter``.

    With no limit configured, ``check`` and ``spend`` do nothing and touch no
    counter. Both raise ``StoreUnavailable`` when the counter is unreachable.
    """

    def __init__(
        self,
        config: BudgetConfig,
        *,
        namespace: str,
        agent: str,
        counter: UsageCounter,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.config = config
        self.counter = counter
        self._clock = clock
        self._limits = limits(config, namespace=namespace, agent=agent)
        self._scopes = list(dict.fromkeys(limited.scope for limited in self._limits))

    def keys(self, now: dt.datetime | None = None) -> list[CounterKey]:
        """The counters a turn at ``now`` adds to: both periods of every limited scope."""
        current = periods(now or self._clock())
        return [CounterKey(scope, period) for scope in self._scopes for period in current]

    async def check(self) -> Exceeded | None:
        """The first limit already reached, or ``None`` when a turn may start."""
        if not self._limits:
            return None
        now = self._clock()
        by_kind = {period.kind: period for period in periods(now)}
        keys = [CounterKey(limited.scope, by_kind[limited.kind]) for limited in self._limits]
        for limited, key, spent in zip(self._limits, keys, await self.counter.spent(keys), strict=True):
            exceeded = _reached(limited, key.period, spent)
            if exceeded is not None:
                return exceeded
        return None

    async def spend(self, *, tokens: int, cost_usd: float) -> tuple[Standing, ...]:
        """Count a turn's usage in every counter of the current periods; returns the new totals
        (none when nothing was counted)."""
        if not self._scopes or (tokens <= 0 and cost_usd <= 0):
            return ()
        keys = self.keys()
        totals = await self.counter.add(keys, tokens=tokens, cost_usd=cost_usd)
        by_period = {(limited.scope, limited.kind): limited.limit for limited in self._limits}
        return tuple(
            Standing(key.scope, key.period.kind, spent, by_period.get((key.scope, key.period.kind)))
            for key, spent in zip(keys, totals, strict=True)
        )

    async def spent(self) -> dict[CounterKey, Spent]:
        """The current periods' totals of every limited scope (for metrics and tests)."""
        keys = self.keys()
        return dict(zip(keys, await self.counter.spent(keys), strict=True))


def _reached(limited: Limited, period: Period, spent: Spent) -> Exceeded | None:
    limit = limited.limit
    if limit.tokens is not None and spent.tokens >= limit.tokens:
        return Exceeded(limited.scope, period, "tokens", limit.tokens, spent.tokens)
    if limit.cost_usd is not None and spent.cost_usd >= limit.cost_usd:
        return Exceeded(limited.scope, period, "costUSD", limit.cost_usd, spent.cost_usd)
    return None
