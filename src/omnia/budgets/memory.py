"""The in-memory counter: one process's spending, for ``omnia run`` and tests.

Replicas do not share it, so with several replicas each enforces the budget
on its own spending only; a budget across replicas needs Redis or PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

from omnia.budgets.base import CounterKey, Spent


class MemoryCounter:
    def __init__(self) -> None:
        self._totals: dict[str, Spent] = {}

    async def spent(self, keys: Sequence[CounterKey]) -> list[Spent]:
        return [self._totals.get(key.name, Spent()) for key in keys]

    async def add(self, keys: Sequence[CounterKey], *, tokens: int, cost_usd: float) -> list[Spent]:
        for key in keys:
            total = self._totals.get(key.name, Spent())
            self._totals[key.name] = Spent(total.tokens + tokens, total.cost_usd + cost_usd)
        return await self.spent(keys)

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._totals.clear()
